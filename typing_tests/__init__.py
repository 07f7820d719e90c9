"""assert_type files, one per public module: type-checked, never run."""
