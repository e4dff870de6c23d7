"""Interoperability with plain PyTorch.

- `from_torch(model, inputs={"x": (3, 224, 224)}, name="net", out="DIR", weights=None)` imports
  an `nn.Module` (traced with torch.fx) as a checkpoint directory that specs `use`
  (`assembler import` on the command line);
- `export(asm, network, "FILE.pt2", format="pt2")` writes a compiled network's inference
  compilation as a standalone `torch.export` program or ONNX file (`assembler export`).

Both verify their result against the original before writing anything.
"""

from .exporter import Exported, export
from .importer import Imported, from_torch, load_factory, load_weights

__all__ = ["Exported", "Imported", "export", "from_torch", "load_factory", "load_weights"]
