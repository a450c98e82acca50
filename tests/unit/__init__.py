"""Unit tests: pure logic and in-memory fakes, no process and no server (seconds in all)."""
