"""GPU and model catalogs (YAML data, strict loader): peak FLOP/s, bandwidth, prices, parameter
counts. Pure: no I/O beyond reading its own data files at start."""
