"""Recording the room's cameras: one thread per camera, crash-safe fragmented files."""
