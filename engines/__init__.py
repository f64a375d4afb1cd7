"""speechstream engines: pure synchronous model compute with explicit state."""
