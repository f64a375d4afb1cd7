"""speechstream sinks: consumers of events."""
