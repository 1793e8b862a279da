"""The pure core: windows, the activity gate, horizon aggregates. No I/O, no clock, no env."""
