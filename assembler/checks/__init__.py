"""Procedures' own argument checks (`Plugin.validate` in `assembler.settings`): torch-free
functions of a train section's checked settings and its `SectionScope` that return located
`Problem`s, one module per procedure. `check` runs them, so a bad argument is a located check
error before any training code runs."""
