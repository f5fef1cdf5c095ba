"""The closed loop over a campaign's record: pure functions of its history (`sdl.loop.history`), deciding the
next experiment (`sdl.loop.proposing`), the optimizer's input packed as numbers (`sdl.loop.observation_log`),
warm starts from earlier campaigns (`sdl.loop.warmstart`), the one lifecycle every runner uses — start,
adopt with recovery, close (`sdl.loop.lifecycle`) — and `sdl run`'s foreground runner
(`sdl.loop.foreground`)."""
