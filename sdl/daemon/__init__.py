"""The lab service (`sdl daemon`, decisions 0004 to 0006): the process that holds the store and the schedule
(`sdl.daemon.service`), the state its collaborators share (`sdl.daemon.state`) and the collaborators —
dispatching work (`dispatch`), supervising workers (`supervision`), instrument health (`health`), on-demand
leases (`leases`), the API's handlers (`handlers`) — the worker that touches a workcell's hardware
(`worker`), the proposer process (`proposer`), and `LabServiceProcess` for tests (`launch`)."""
