"""What the tunnel scanner simulators share: the engine, its data model, the CLI runner and a
TCP port that stands in for a scanner's Ethernet interface."""
