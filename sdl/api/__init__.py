"""The lab service's API: typed request and reply models (`sdl.api.models`), the wire format
(`sdl.api.wire`), the 0MQ server the lab service runs (`sdl.api.server`), and the generated reference
(`python -m sdl.api.docs` writes docs/api.md)."""
