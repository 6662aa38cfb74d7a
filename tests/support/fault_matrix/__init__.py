"""The fault matrix: harness, rows and doc generator (see tests/test_fault_matrix.py)."""
