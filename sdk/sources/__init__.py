"""Sources: context managers that iterate timestamped audio chunks or video frames."""
