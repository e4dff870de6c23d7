"""`assembler train`: train a spec's sections in dependency order, imports first (a spec
imported with `use` that has train sections is trained once, into the cache).

`train FILE --out DIR` trains every section into `DIR/<network>`; with `--network N` only N's
section (and the same-file sections it depends on, in memory) into `DIR`, which is then N's
checkpoint. `--set key=value` overrides settings (`--set procedure.gamma1=0.1` sets an
argument of the procedure)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

import networkx as nx

from .. import ir
from ..assemble import compile as compile_spec
from ..atomic import lock, recover
from ..cache import cache_root, lookup, section_key, spec_key
from ..checkpoint import META, metrics_lines, read_meta, save
from ..errors import CheckError, CheckpointError, Diagnostic, SpecError, did_you_mean
from ..parser import parse_fragment
from ..resolve import _references, check
from . import distributed as dist
from .device import resolve as resolve_device
from .trainer import Interrupted, Trainer


def apply_sets(spec: ir.Spec, sets: list[str], networks: tuple[str, ...] | None = None) -> ir.Spec:
    """The spec with `--set key=value` overrides written into its train sections."""
    if not sets:
        return spec
    parsed = []
    for flag in sets:
        key, eq, value = flag.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise SpecError(Diagnostic(f"--set {flag}: expected key=value", f"--set {flag}",
                                       hint="e.g. --set epochs=5 or --set optimizer='adam(lr=0.01)'"))
        try:
            parsed.append((flag, key, parse_fragment(value, "value", f"--set {flag}")))
        except SpecError as e:
            raise SpecError(Diagnostic(f"--set {flag}: {e.message}", f"--set {flag}")) from None
    items = []
    for item in spec.items:
        if isinstance(item, ir.Train) and (networks is None or set(item.networks) & set(networks)):
            settings = list(item.settings)
            for flag, key, value in parsed:
                settings = _set(settings, key, value, flag)
            item = item.model_copy(update={"settings": tuple(settings)})
        items.append(item)
    return spec.model_copy(update={"items": tuple(items)})


def _set(settings: list[ir.Setting], key: str, value, flag: str) -> list[ir.Setting]:
    span = ir.Span(file=f"--set {flag}", line=0, column=0)
    head, _, arg = key.partition(".")
    if not arg:
        new = ir.Setting(key=head, value=value, span=span)
        return [new if s.key == head else s for s in settings] + ([] if any(s.key == head for s in settings)
                                                                 else [new])
    out = []
    found = False
    for s in settings:
        if s.key == head:
            found = True
            call = s.value if isinstance(s.value, ir.Call) else ir.Call(ref=s.value, args=())
            args = [a for a in call.args if a.name != arg] + [ir.Arg(name=arg, value=value, span=span)]
            s = s.model_copy(update={"value": call.model_copy(update={"args": tuple(args)})})
        out.append(s)
    if not found:
        raise SpecError(Diagnostic(f"--set {flag}: the section has no '{head}' setting to change", f"--set {flag}"))
    return out


def _section_graph(checked, spec: ir.Spec) -> nx.DiGraph:
    """Edges from the section of a network to the sections of networks that use it."""
    owner = {n: i for i, t in enumerate(checked.trains) for n in t.networks}
    g = nx.DiGraph()
    g.add_nodes_from(range(len(checked.trains)))
    nets = spec.networks
    for i, t in enumerate(checked.trains):
        deps = set()
        for n in t.networks:
            if n in nets:
                deps |= {r.parts[0] for r in _references(nets[n])}
        deps |= {v for v in t.settings.get("procedure", {}).get("args", {}).values() if isinstance(v, str)}
        for d in deps:
            if d in owner and owner[d] != i:
                g.add_edge(owner[d], i)
    return g


def section_order(checked, spec: ir.Spec, only: str | None = None) -> list:
    """Train sections so that every section comes after those of networks it uses; with
    `only`, just that network's section and the ones it depends on."""
    g = _section_graph(checked, spec)
    order = list(nx.lexicographical_topological_sort(g))
    if only is not None:
        target = next(i for i, t in enumerate(checked.trains) if only in t.networks)
        keep = nx.ancestors(g, target) | {target}
        order = [i for i in order if i in keep]
    return [checked.trains[i] for i in order]


def train_spec(spec: ir.Spec, *, network: str | None = None, out: Path | None = None, sets: list[str] = (),
               resume: bool = False, quiet: bool = False, single_checkpoint: bool = False,
               device: str | None = None, force: bool = False, distributed: bool = True) -> dict[str, list]:
    """Train a spec; returns each trained network's metrics history. `distributed=False`: in
    this process alone, even under torchrun (an import, trained before the ranks join)."""
    base = Path(spec.filename).parent if not spec.filename.startswith("<") else Path.cwd()
    for use in spec.uses:
        target = base / use.path
        if target.is_file():
            ensure_trained(target, quiet=quiet)
    spec = apply_sets(spec, list(sets), (network,) if network else None)
    checked = _check_with_flags(spec)
    sections = _sections(checked, spec, network)
    torch_device = resolve_device(device if device is not None else sections[-1].settings.get("device"),
                                  "--device" if device is not None else "setting 'device'")
    if distributed:
        dist.init_from_env(torch_device)
    asm = compile_spec(spec, seed=sections[-1].settings.get("seed", 0))
    _set_threads(asm, sections)
    if not quiet and dist.rank() == 0:
        for w in asm.warnings:
            print(f"warning: {w}", file=sys.stderr)
    results = {}
    for t in sections:
        dest = _destination(spec, t, network, out, single_checkpoint)
        dependency = network is not None and network not in t.networks
        asm, history = _train_section(asm, t, dest, base, torch_device, quiet, resume or dependency, force or dependency,
                                      note=not dependency)
        results.update({n: history for n in t.networks})
        if dest is not None and network is None and dist.rank() == 0:
            for other in t.networks[1:]:
                if (out / other).exists():
                    shutil.rmtree(out / other)
                shutil.copytree(dest, out / other)
    if single_checkpoint and out is not None and dist.rank() == 0:
        save(asm, out, settings={}, metrics={n: h[-1] if h else {} for n, h in results.items()},
             extra={"train": {"complete": True, "networks": list(results)}})
    dist.barrier()
    return results


def _sections(checked, spec: ir.Spec, network: str | None) -> list:
    if not checked.trains:
        raise CheckError(Diagnostic(f"{spec.filename} has no train section", spec.filename,
                                    hint="add one: train NET { procedure = finetune ... }"))
    if network is None:
        return section_order(checked, spec)
    if network not in checked.networks:
        raise SpecError(Diagnostic(f"no network '{network}' (given by --network)", spec.filename,
                                   hint=did_you_mean(network, checked.networks)))
    if not any(network in t.networks for t in checked.trains):
        raise SpecError(Diagnostic(f"network '{network}' has no train section", spec.filename,
                                   hint=f"add: train {network} {{ ... }}"))
    return section_order(checked, spec, only=network)


def _train_section(asm, t, dest: Path | None, base: Path, device, quiet: bool, resume: bool, force: bool,
                   note: bool = True):
    """Train one section into `dest` (resuming or reusing what is there); (the Assembly the next
    sections build on, the section's metrics history)."""
    trainer = Trainer(asm, t, dest, base_dir=base, quiet=quiet, device=device)
    repaired = dest is not None and dist.rank() == 0 and recover(dest)
    with _writing(dest, wait=not note):
        resume_from = _resumable(dest, resume, force, quiet or not note, repaired)
        if resume_from is not None and not note and _stale(trainer, dest, quiet):
            resume_from = None  # a cached section another version of the code wrote: train it again
        if resume_from is not None and _complete(dest):
            return _finished(trainer, dest, quiet), metrics_lines(dest)
        outcome = trainer.run(resume_from=resume_from)
    return outcome.asm, trainer.state.history  # a procedure may end with a new graph (NetTailor's)


def _destination(spec: ir.Spec, section, network: str | None, out: Path | None, single_checkpoint: bool) -> Path | None:
    """Where a section's checkpoint goes: `out` for the asked network, `out/<first network>`
    when training every section, the cache for a section the asked network depends on (a
    teacher, trained once and reused), nowhere when an import is trained into one checkpoint."""
    if single_checkpoint or out is None:
        return None
    if network is None:
        return out / section.networks[0]
    if network in section.networks:
        return out
    return cache_root() / "sections" / section_key(spec, section)


def _writing(dest: Path | None, wait: bool = False):
    """The writer's lock of a checkpoint directory (rank 0 writes): a second run is refused, or
    with `wait` (a cached section), waits and then reuses what the first trained."""
    if dest is None or dist.rank() != 0:
        return contextlib.nullcontext()
    return lock(dest, "assembler train", wait=wait)


def _resumable(dest: Path | None, resume: bool, force: bool, quiet: bool, repaired: bool) -> Path | None:
    """The checkpoint to resume from, or None to start over; never overwrites silently.
    `repaired`: what a crash during a save left was repaired (`atomic.recover`)."""
    if dest is None:
        return None
    if repaired and not quiet and dist.rank() == 0:
        print(f"note: recovered {dest} from a save that a crash interrupted", file=sys.stderr)
    exists = (dest / META).is_file()
    if resume:
        if exists:
            return dest
        if not quiet and dist.rank() == 0:
            print(f"note: nothing to resume in {dest}: training from the start", file=sys.stderr)
        return None
    if exists and not force:
        raise SpecError(Diagnostic(f"{dest} already holds a checkpoint", str(dest),
                                   hint="add --resume to continue it, --force to overwrite it, or give another --out"))
    return None


def _stale(trainer: Trainer, dest: Path, quiet: bool) -> bool:
    """Whether a cached section cannot be reused (unreadable, or written by a run whose spec
    or settings, as this version of assembler resolves them, differ)."""
    try:
        stale = read_meta(dest).get("train", {}).get("run") != trainer.run_key
    except CheckpointError:
        stale = True
    if stale and not quiet and dist.rank() == 0:
        print(f"note: {dest} was written by another version or run; training it again", file=sys.stderr)
    return stale


def _finished(trainer: Trainer, dest: Path, quiet: bool):
    """A complete checkpoint given to --resume (or a cached dependency): verified (hashes, spec
    and settings) and loaded, not retrained."""
    from ..checkpoint import load_weights, restore
    from .state import read_state
    read_state(trainer, dest)
    if not quiet and dist.rank() == 0:
        print(f"{trainer.label}: {dest} is already trained (complete); reusing it", file=sys.stderr)
    try:  # the same graph: its weights into the Assembly the next sections build on
        load_weights(trainer.asm, dest)
        return trainer.asm
    except CheckpointError:  # the section ended with a new graph (NetTailor's tailored network)
        return restore(dest)


def ensure_trained(spec_path: Path, quiet: bool = False, _stack: tuple = ()) -> Path | None:
    """Train (once) a spec imported with `use` that has train sections; its checkpoint. Another
    process training the same entry is waited for, not repeated."""
    from ..resolve import read
    spec_path = Path(spec_path).resolve()
    spec = read(spec_path)
    for use in spec.uses:  # imports of imports first
        target = spec_path.parent / use.path
        if target.is_file() and str(target) not in _stack:
            ensure_trained(target, quiet, _stack + (str(spec_path),))
    if not spec.trains:
        return None
    found = lookup(spec_path)
    if found is not None:
        return found
    out = cache_root() / spec_key(spec_path)
    with lock(out, "training an import", wait=True):
        found = lookup(spec_path)  # trained by the process we waited for
        if found is not None:
            return found
        if not quiet:
            print(f"training the imported spec {os.path.relpath(spec_path)} (cached in {out})", file=sys.stderr)
        # in this process alone: under torchrun the other ranks wait on the lock, not in the group
        train_spec(spec, out=out, quiet=quiet, single_checkpoint=True, force=True, distributed=False)
    return out


SMALL_FLOPS = 50_000_000  # per sample: below this, one intra-op thread is fastest


def _set_threads(asm, sections) -> None:
    """Small networks run fastest on one thread (and never oversubscribe a shared machine);
    ASSEMBLER_THREADS overrides."""

    import torch
    if os.environ.get("ASSEMBLER_THREADS"):
        torch.set_num_threads(int(os.environ["ASSEMBLER_THREADS"]))
    elif all(asm.checked.flops(n) < SMALL_FLOPS for t in sections for n in t.networks):
        torch.set_num_threads(1)


def _complete(path: Path) -> bool:
    return bool(read_meta(path).get("train", {}).get("complete"))


def _check_with_flags(spec: ir.Spec):
    try:
        return check(spec)
    except CheckError as e:
        diags = [Diagnostic(d.message, d.filename, 0, 0, 1, d.hint) if d.filename.startswith("--set") else d
                 for d in e.diagnostics]
        raise CheckError(diags) from None


__all__ = ["Interrupted", "apply_sets", "ensure_trained", "train_spec"]
