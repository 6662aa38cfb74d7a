"""Test helpers shared by the test modules and the demo script (scratch image trees)."""
