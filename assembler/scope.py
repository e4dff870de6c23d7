"""What the lowering of one network may read: the spec's definitions, the networks lowered
before it, the imports and the modules declared so far; and the rules for names.

A `Scope` is read-only to the lowering: each network's lowering returns the modules it
declares, and the checking pipeline adds them to the next network's scope.
"""

from __future__ import annotations

import keyword
import os
from dataclasses import dataclass, field
from typing import Mapping

from . import ir
from .errors import Diagnostic, diagnostic
from .graph import Checked, CheckedNetwork, Module
from .keys import ModuleKey
from .parser import KEYWORDS


class Fail(Exception):
    """Stops lowering one binding; carries its diagnostics (none: an earlier error explains it)."""

    def __init__(self, *diags: Diagnostic):
        super().__init__(*(d.message for d in diags))
        self.diags = list(diags)


def fail(message: str, span, hint: str | None = None, width: int | None = None) -> Fail:
    return Fail(diagnostic(message, span, hint=hint, width=width))


@dataclass
class Imported:
    """An imported spec as its importer sees it: checked networks and modules, keyed inside it."""

    alias: str
    path: str
    networks: dict[str, CheckedNetwork]
    modules: dict[str, Module]
    single: str | None  # the network's name when the file holds exactly one
    checked: "Checked | None" = None  # the imported spec, checked

    def key(self, key: str) -> ModuleKey:
        """The importer's key for a module key of the imported spec: the alias, then the key
        without the network's name when the file holds one network (`pre.c2.0`)."""
        if self.single:
            key = ModuleKey(key).replace_prefix(self.single, "")
        return ModuleKey(f"{self.alias}.{key}")


@dataclass(frozen=True)
class Scope:
    """What names mean outside the network being lowered (built by the checking passes)."""

    blocks: dict[str, ir.Block]
    shared: dict[str, ir.Shared]
    # `NAME.` -> a lowered network to take bindings from: same-file networks and imports
    networks: Mapping[str, CheckedNetwork]
    imports: dict[str, Imported]
    modules: Mapping[str, Module]  # every module declared by the networks lowered before
    failed: frozenset[str] = frozenset()  # imports and networks with errors of their own
    text: str | None = None  # the spec's source, to point carets at names
    network_names: frozenset[str] = frozenset()  # every network of the spec, lowered or not
    limits: "Limits | None" = None  # size limits (None: the defaults)


@dataclass(frozen=True)
class Limits:
    """How big a checked spec may be before `check` refuses it (each can be raised).

    The defaults are generous: networks far larger than anything this package trains, but
    small enough that an absurd spec (`conv(100000, 3)`) is refused before `compile` tries to
    allocate it. The environment variables ASSEMBLER_MAX_PARAMS and ASSEMBLER_MAX_ACTIVATION
    change the defaults; `assembler check --max-params/--max-activation` and
    `check(spec, Limits(...))` set them for one check."""

    params: int = field(default_factory=lambda: _env_int("ASSEMBLER_MAX_PARAMS", 2_000_000_000))
    # (parameters of all modules together: 8 GB of float32)
    activation: int = field(default_factory=lambda: _env_int("ASSEMBLER_MAX_ACTIVATION", 1_000_000_000))
    # (numbers in one value of one sample: 4 GB of float32)

    def with_(self, **kw) -> "Limits":
        """These limits with some changed (None: keep)."""
        return Limits(**{**self.__dict__, **{k: v for k, v in kw.items() if v is not None}})


def _env_int(name: str, default: int) -> int:
    """A limit from the environment (so that `train` and `compile` can raise it too)."""
    try:
        return max(1, int(float(os.environ[name])))
    except (KeyError, ValueError, OverflowError):
        return default


#: Names a compiled network cannot use: Python keywords (node and argument names) and the
#: attributes of `torch.fx.GraphModule` (bindings and top-level names become its
#: submodules). Written out so that checking never imports torch; a test compares it with
#: the real attributes of the torch version the package pins.
_GRAPH_MODULE_ATTRIBUTES = frozenset("""
T_destination _ _apply _boxed_call _call_impl _compiled_call_impl _deepcopy_init _get_backward_hooks
_get_backward_pre_hooks _get_name _load_from_state_dict _maybe_warn_non_full_backward_hook _named_members
_recompile_submodules _register_create_node_hook _register_deepcopy_hook _register_erase_node_hook
_register_load_state_dict_pre_hook _register_replace_node_hook _register_state_dict_hook
_replicate_for_data_parallel _save_to_state_dict _set_replace_hook _slow_forward _unregister_create_node_hook
_unregister_deepcopy_hook _unregister_erase_node_hook _unregister_replace_node_hook _version _wrapped_call_impl
add_module add_submodule apply bfloat16 buffers call_super_init children code compile cpu cuda
delete_all_unused_submodules delete_submodule double dump_patches eval extra_repr float forward get_buffer
get_extra_state get_parameter get_submodule graph half ipu load_state_dict modules mtia named_buffers
named_children named_modules named_parameters parameters print_readable recompile register_backward_hook
register_buffer register_forward_hook register_forward_pre_hook register_full_backward_hook
register_full_backward_pre_hook register_load_state_dict_post_hook register_load_state_dict_pre_hook
register_module register_parameter register_state_dict_post_hook register_state_dict_pre_hook requires_grad_
set_extra_state set_submodule share_memory state_dict to to_empty to_folder train type xpu zero_grad
""".split())
PYTHON_RESERVED: frozenset[str] = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | _GRAPH_MODULE_ATTRIBUTES


def python_reserved() -> frozenset[str]:
    """Names a compiled network cannot use (see `PYTHON_RESERVED`)."""
    return PYTHON_RESERVED


def name_problem(name: str, what: str, builtins: frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """(message, hint) when `name` cannot name `what`: a keyword, a built-in, or a name that
    compiled networks reserve; None when it can."""
    if name in KEYWORDS:
        return f"'{name}' is a keyword and cannot name {what}", "choose another name"
    if name in builtins:
        return (f"'{name}' is a built-in and cannot name {what}",
                "choose another name: built-in op and merge names are reserved")
    if name in PYTHON_RESERVED:
        return (f"'{name}' is reserved in compiled networks (a Python keyword or an attribute of torch's "
                f"GraphModule) and cannot name {what}", "choose another name")
    return None
