"""What a campaign and a lab are: the campaign file (`sdl.spec.campaign`), the lab file (`sdl.spec.lab`),
reading either with every mistake located by file, line and field (`sdl.spec.loading`), checking a lab's
instruments before anything connects (`sdl.spec.preflight`), resolving the import paths they name
(`sdl.spec.importpaths`), and the statuses of experiments, campaigns, instruments and workcells with their
state machines (`sdl.spec.status`)."""
