"""The command-line verbs, one module per area; `assembler.cli` gathers them into one group."""
