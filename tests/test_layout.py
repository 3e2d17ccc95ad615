"""The package's layout rules: model-specific names live in adapters/ (and the test-model builders),
production code never imports the test helpers, and no module imports in a cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import vis_steer_lens

PACKAGE = Path(vis_steer_lens.__file__).parent

# Hugging Face / TransformerBridge module names of particular families (the grep).
_HF_NAMES = re.compile(
    r"layer_norm1|layer_norm2|self_attn|post_layernorm|encoder\.layers|multi_modal_projector|vision_tower|"
    r"patch_embedding|position_embedding|layernorm_before|encoder_layers"
)


# The family test-model builders: they write out the families' configs (tiny and released) and
# redraw their projectors, so they name config fields and modules as the adapters do. Only these:
# not the testing package's public functions, its builder registry or its tokenizers.
_BUILDER_MODULES = (
    "vis_steer_lens.testing.gemma3",
    "vis_steer_lens.testing.internvl3",
    "vis_steer_lens.testing.llava",
    "vis_steer_lens.testing.llava_next",
    "vis_steer_lens.testing.paligemma",
    "vis_steer_lens.testing.qwen2_vl",
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    """Every vis_steer_lens module ``path`` imports, at module level or inside functions
    (``if TYPE_CHECKING:`` blocks excepted)."""
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("vis_steer_lens")}


def test_no_family_module_names_outside_adapters_and_the_toy_world():
    offenders = []
    for name, path in _modules().items():
        if name.startswith(("vis_steer_lens.adapters", "vis_steer_lens.toy")) or name in _BUILDER_MODULES:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _HF_NAMES.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# Qwen2-VL / Qwen2.5-VL module and config names (the module path `model.visual`, not the word).
_QWEN_NAMES = re.compile(
    r"\.visual\b|\bvisual\.|\bmerger\b|window_index|fullatt_block_indexes|spatial_merge_size|"
    r"Qwen2_5_VL|Qwen2VL"
)


def test_no_qwen_module_or_config_names_outside_adapters():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("vis_steer_lens.adapters") or name in _BUILDER_MODULES:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _QWEN_NAMES.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_production_code_never_imports_the_test_helpers():
    """Only vis_steer_lens.testing itself imports vis_steer_lens.testing (``if TYPE_CHECKING:``
    blocks excepted): the adapters and the core build no test models."""
    offenders = []
    for name, path in _modules().items():
        if name == "vis_steer_lens.testing" or name.startswith("vis_steer_lens.testing."):
            continue
        imported = _imports(path, name, path.name == "__init__.py")
        offenders += [
            f"{name} imports {i}"
            for i in sorted(imported)
            if i == "vis_steer_lens.testing" or i.startswith("vis_steer_lens.testing.")
        ]
    assert not offenders, "\n".join(offenders)


def test_the_core_has_no_import_cycle():
    """Edges between modules (an import of ``a.b.c`` also runs ``a.b``'s ``__init__``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name == "vis_steer_lens":  # the public API re-exports everything
            continue
        targets = set()
        for imported in _imports(path, name, path.name == "__init__.py"):
            parts = imported.split(".")
            for end in range(2, len(parts) + 1):  # the module itself and every package above it
                candidate = ".".join(parts[:end])
                if candidate in modules and candidate != name and candidate != "vis_steer_lens":
                    targets.add(candidate)
        # A package's __init__ running its own submodules is the package's business, not a cycle.
        graph[name] = {t for t in targets if not t.startswith(name + ".")}

    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    shown = [" -> ".join(cycle) for cycle in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(shown)


def test_importing_the_package_loads_no_toy_module():
    import subprocess
    import sys

    code = "import sys, vis_steer_lens; print(sorted(m for m in sys.modules if m.startswith('vis_steer_lens.toy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_core_does_not_import_the_toy_world():
    """The toy world is a plug-in: only it, the CLI and the demo (which runs it) may import it."""
    allowed = ("vis_steer_lens.toy", "vis_steer_lens.cli", "vis_steer_lens.demo")
    offenders = []
    for name, path in _modules().items():
        if name == "vis_steer_lens" or name.startswith(allowed):
            continue
        imported = _imports(path, name, path.name == "__init__.py")
        offenders += [f"{name} imports {i}" for i in sorted(imported) if i.startswith("vis_steer_lens.toy")]
    assert not offenders, "\n".join(offenders)


def test_the_toy_world_plugs_in_through_the_registries():
    from vis_steer_lens.explain.prompts import get_prompt
    from vis_steer_lens.image_sources import open_image_source
    from vis_steer_lens.plugins import GENERATORS, GROUND_TRUTHS, IMAGE_SOURCES, SEGMENTERS

    assert get_prompt("toy").prompt_id == "toy"
    assert (
        "toy" in SEGMENTERS.names()
        and "toy" in IMAGE_SOURCES.names()
        and "toy" in GROUND_TRUTHS.names()
        and "toy-renderer" in GENERATORS.names()
    )
    images = open_image_source({"kind": "toy", "seed": 3, "n": 4})
    assert len(images) == 4 and images[0].size == (64, 64)
    import pytest

    with pytest.raises(ValueError, match="Unknown image source kind 'nope'"):
        open_image_source({"kind": "nope"})


def test_the_top_level_api():
    import vis_steer_lens as vsl

    for name in (
        "HookedViT",
        "HookedVLM",
        "SteeringExplainer",
        "TopKExplainer",
        "SteeringInformedTopKExplainer",
        "make_explainer",
        "GenerationAUROCScorer",
        "ClipSimilarityScorer",
        "SegmentationIoUScorer",
        "DetectionScorer",
        "LikelihoodScorer",
        "scorer_agreement",
        "compare",
        "compare_run",
        "RunFolder",
        "feature_attribution",
        "load_sae",
    ):
        assert name in vsl.__all__ and getattr(vsl, name) is not None, name
