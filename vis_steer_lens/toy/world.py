"""A seeded procedural world of 64×64 concept images with known ground truth.

Each image is a 4×4 grid of 16-pixel cells, one cell per vision patch. Every object lies entirely
inside one cell, so one object is one patch and the ground truth of each patch is known exactly.
Gray (128, 128, 128) never appears in a rendered scene: it is reserved for masking patches.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from vis_steer_lens import display

IMAGE_SIZE = 64
CELL_SIZE = 16
GRID_SIZE = IMAGE_SIZE // CELL_SIZE  # 4 cells a side
NUM_CELLS = GRID_SIZE * GRID_SIZE
MASK_FILL = (128, 128, 128)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 180, 40),
    "blue": (40, 70, 235),
    "yellow": (245, 225, 30),
    "purple": (145, 45, 190),
    "orange": (250, 140, 20),
    "cyan": (30, 220, 225),
    "pink": (250, 125, 195),
    "brown": (140, 85, 35),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black background": (0, 0, 0),
    "white background": (255, 255, 255),
}
SHAPES = ["circle", "square", "triangle", "cross", "ring"]
TEXTURES = ["solid", "striped", "dotted", "checkered"]
SIZES = ["small", "large"]
POSITIONS = ["top left", "top right", "bottom left", "bottom right", "center"]

# The 16 cells (row-major, cell = row * 4 + col) map onto 5 position words: the inner 2×2 block is
# "center" and each corner word owns its corner cell plus the two edge cells next to it.
_POSITION_LAYOUT = [
    ["top left", "top left", "top right", "top right"],
    ["top left", "center", "center", "top right"],
    ["bottom left", "center", "center", "bottom right"],
    ["bottom left", "bottom left", "bottom right", "bottom right"],
]
CELL_POSITIONS: tuple[str, ...] = tuple(word for row in _POSITION_LAYOUT for word in row)
POSITION_CELLS: dict[str, tuple[int, ...]] = {
    word: tuple(cell for cell, name in enumerate(CELL_POSITIONS) if name == word) for word in POSITIONS
}

CATEGORIES: dict[str, list[str]] = {
    "shape": list(SHAPES),
    "color": list(COLORS),
    "texture": list(TEXTURES),
    "size": list(SIZES),
    "position": list(POSITIONS),
    "background": list(BACKGROUNDS),
}
CONCEPT_CATEGORY: dict[str, str] = {
    concept: category for category, concepts in CATEGORIES.items() for concept in concepts
}
OBJECT_CATEGORIES = ("shape", "color", "texture", "size", "position")

# Textured pixels are the object colour at half brightness: they keep the silhouette intact (shape is
# the hardest concept to learn) while staying visible on both backgrounds.
TEXTURE_SHADE = 0.5
# Half extent of each size, in pixels, measured from the shape's centre.
_SIZE_RADIUS = {"small": 4.5, "large": 7.3}
# How far a small object may move from the cell centre and still lie inside its cell.
_SMALL_JITTER = 2


def _shape_mask(shape: str, radius: float) -> np.ndarray:
    """Boolean [16, 16] mask of a shape centred in a cell, sampled at pixel centres."""
    coords = np.arange(CELL_SIZE) + 0.5
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    dy = ys - CELL_SIZE / 2
    dx = xs - CELL_SIZE / 2
    dist = np.sqrt(dx**2 + dy**2)
    if shape == "circle":
        return dist <= radius
    if shape == "ring":
        thickness = max(2.0, radius * 0.38)
        return (dist <= radius) & (dist >= radius - thickness)
    if shape == "square":
        half = radius * 0.82
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "cross":
        arm = max(1.0, radius * 0.3)
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
    if shape == "triangle":
        # Upward-pointing: the half-width grows linearly from the apex to the base.
        top, bottom = -radius, radius * 0.8
        half_width = (dy - top) / (bottom - top) * radius
        return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= half_width)
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def _texture_pattern(texture: str) -> np.ndarray:
    """Boolean [16, 16] mask of the pixels drawn in the darker shade, aligned to the cell."""
    ys, xs = np.meshgrid(np.arange(CELL_SIZE), np.arange(CELL_SIZE), indexing="ij")
    if texture == "solid":
        return np.zeros((CELL_SIZE, CELL_SIZE), dtype=bool)
    # Phases are chosen so every shape at both sizes shows 20-60% shaded pixels (even thin small crosses).
    if texture == "striped":
        return (ys % 4) < 2
    if texture == "dotted":
        return ((ys % 4) < 2) & ((xs % 4) < 2)
    if texture == "checkered":
        return ((ys // 2) + (xs // 2)) % 2 == 1
    raise ValueError(f"Unknown texture {texture!r}; expected one of {TEXTURES}.")


SHAPE_MASKS: dict[tuple[str, str], np.ndarray] = {
    (shape, size): _shape_mask(shape, radius) for shape in SHAPES for size, radius in _SIZE_RADIUS.items()
}
TEXTURE_PATTERNS: dict[str, np.ndarray] = {texture: _texture_pattern(texture) for texture in TEXTURES}


def _shade(rgb: tuple[int, int, int]) -> np.ndarray:
    return (np.asarray(rgb, dtype=np.float32) * TEXTURE_SHADE).round().astype(np.uint8)


SHADED_COLORS: dict[str, tuple[int, int, int]] = {
    name: tuple(int(v) for v in _shade(rgb)) for name, rgb in COLORS.items()
}


def _check_concept(category: str, value: str) -> None:
    if value not in CATEGORIES[category]:
        raise ValueError(f"Unknown {category} {value!r}; expected one of {CATEGORIES[category]}.")


def cell_position(cell: int) -> str:
    """Position word of a cell index (row-major, 0..15)."""
    if not 0 <= cell < NUM_CELLS:
        raise ValueError(f"Cell index must be in [0, {NUM_CELLS}), got {cell}.")
    return CELL_POSITIONS[cell]


@dataclass(frozen=True)
class ObjectSpec:
    """One object, drawn entirely inside one cell.

    Attributes:
        shape: One of `SHAPES`.
        color: One of `COLORS`.
        texture: One of `TEXTURES`.
        size: "small" or "large".
        cell: Row-major cell index in [0, 16); `cell // 4` is the row.
        offset: (dy, dx) pixel shift from the cell centre; only small objects move.
    """

    shape: str
    color: str
    texture: str
    size: str
    cell: int
    offset: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        _check_concept("shape", self.shape)
        _check_concept("color", self.color)
        _check_concept("texture", self.texture)
        _check_concept("size", self.size)
        cell_position(self.cell)
        if self.size == "large" and tuple(self.offset) != (0, 0):
            raise ValueError(f"Large objects fill their cell and cannot be offset, got {self.offset}.")
        if any(abs(v) > _SMALL_JITTER for v in self.offset):
            raise ValueError(f"Offsets must lie within ±{_SMALL_JITTER} px, got {self.offset}.")

    @property
    def position(self) -> str:
        """Position word of the object's cell."""
        return CELL_POSITIONS[self.cell]

    @property
    def row_col(self) -> tuple[int, int]:
        """(row, column) of the object's cell in the 4×4 grid."""
        return divmod(self.cell, GRID_SIZE)

    def concepts(self) -> set[str]:
        """Ground-truth concept words of this object (texture included even when solid)."""
        return {self.shape, self.color, self.texture, self.size, self.position}

    def attributes(self) -> dict[str, str]:
        """Concept of each object category, e.g. {"shape": "circle", ...}."""
        return {
            "shape": self.shape,
            "color": self.color,
            "texture": self.texture,
            "size": self.size,
            "position": self.position,
        }

    def phrase(self) -> str:
        """Noun phrase without article, e.g. "large red striped circle" (solid is left unsaid)."""
        words = [self.size, self.color]
        if self.texture != "solid":
            words.append(self.texture)
        words.append(self.shape)
        return " ".join(words)

    def pixel_mask(self) -> np.ndarray:
        """Boolean [64, 64] mask of the pixels this object covers."""
        full = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        row, col = self.row_col
        full[row * CELL_SIZE : (row + 1) * CELL_SIZE, col * CELL_SIZE : (col + 1) * CELL_SIZE] = (
            self._cell_mask()
        )
        return full

    def _cell_mask(self) -> np.ndarray:
        return self._cell_layers()[0]

    def _cell_layers(self) -> tuple[np.ndarray, np.ndarray]:
        """[16, 16] masks of the object's pixels and of its shaded (texture) pixels within its cell."""
        mask = SHAPE_MASKS[(self.shape, self.size)]
        shaded = mask & TEXTURE_PATTERNS[self.texture]
        dy, dx = self.offset
        if dy or dx:
            # The texture moves with the object so its visibility never depends on the jitter; small
            # masks have a margin wider than the jitter, so rolling never wraps pixels around.
            mask = np.roll(mask, (dy, dx), axis=(0, 1))
            shaded = np.roll(shaded, (dy, dx), axis=(0, 1))
        return mask, shaded


@dataclass(frozen=True)
class Scene:
    """A background and 1–2 objects in distinct cells.

    Attributes:
        objects: The objects, sorted by cell so captions are canonical.
        background: One of `BACKGROUNDS` ("black background" or "white background").
    """

    objects: tuple[ObjectSpec, ...]
    background: str = "black background"
    _cells: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_concept("background", self.background)
        objects = tuple(sorted(self.objects, key=lambda obj: obj.cell))
        cells = tuple(obj.cell for obj in objects)
        if len(set(cells)) != len(cells):
            raise ValueError(f"Objects must occupy distinct cells, got cells {cells}.")
        object.__setattr__(self, "objects", objects)
        object.__setattr__(self, "_cells", cells)

    def concepts(self) -> set[str]:
        """Ground-truth concept words of the scene, background included (e.g. "black background")."""
        found = {self.background}
        for obj in self.objects:
            found |= obj.concepts()
        return found

    def caption(self) -> str:
        """Caption in the world's fixed vocabulary.

        Example: "a large red striped circle at the top left and a small blue square at the bottom
        right on a black background". An empty scene is "nothing on a black background".
        """
        if not self.objects:
            return f"nothing on a {self.background}"
        parts = [f"a {obj.phrase()} at the {obj.position}" for obj in self.objects]
        return f"{' and '.join(parts)} on a {self.background}"

    def cell_concepts(self) -> list[set[str]]:
        """Per-cell ground truth: for each of the 16 cells, the concepts of the object in it plus the background."""
        per_cell = [{self.background} for _ in range(NUM_CELLS)]
        for obj in self.objects:
            per_cell[obj.cell] |= obj.concepts()
        return per_cell

    def object_at(self, cell: int) -> ObjectSpec | None:
        """The object in a cell, or None."""
        for obj in self.objects:
            if obj.cell == cell:
                return obj
        return None


def render_array(scene: Scene) -> np.ndarray:
    """Render a scene to a uint8 [64, 64, 3] array."""
    canvas = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    canvas[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        row, col = obj.row_col
        cell = canvas[row * CELL_SIZE : (row + 1) * CELL_SIZE, col * CELL_SIZE : (col + 1) * CELL_SIZE]
        mask, shaded = obj._cell_layers()
        cell[mask & ~shaded] = COLORS[obj.color]
        cell[shaded] = SHADED_COLORS[obj.color]
    return canvas


def render(scene: Scene) -> Image.Image:
    """Render a scene to a 64×64 RGB PIL image."""
    return Image.fromarray(render_array(scene), mode="RGB")


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(
            f"Expected a {IMAGE_SIZE}×{IMAGE_SIZE} RGB image, got an array of shape {array.shape}."
        )
    return array


def _cell_grid(values: np.ndarray | Sequence, name: str) -> np.ndarray:
    grid = np.asarray(values)
    if grid.shape == (NUM_CELLS,):
        grid = grid.reshape(GRID_SIZE, GRID_SIZE)
    if grid.shape != (GRID_SIZE, GRID_SIZE):
        raise ValueError(
            f"{name} must have shape [{GRID_SIZE}, {GRID_SIZE}] (or [{NUM_CELLS}]), got {tuple(grid.shape)}."
        )
    return grid


def mask_patches(
    image: Image.Image | np.ndarray,
    keep_mask: np.ndarray | Sequence,
    fill: tuple[int, int, int] = MASK_FILL,
) -> Image.Image:
    """Paint every patch not kept in a flat colour (gray by default), as in top-k prompts.

    Args:
        image: A 64×64 RGB image.
        keep_mask: Boolean [4, 4] (or [16]) grid; True keeps the patch.
        fill: RGB colour of dropped patches.

    Returns:
        A new 64×64 RGB image.
    """
    keep = _cell_grid(keep_mask, "keep_mask").astype(bool)
    return display.mask_patches(_as_array(image), keep, CELL_SIZE, fill)


def heatmap_overlay(
    image: Image.Image | np.ndarray,
    activations: np.ndarray | Sequence,
    max_value: float | None = None,
    max_alpha: float = 0.5,
) -> Image.Image:
    """Blend a green overlay over each patch in proportion to its activation.

    Args:
        image: A 64×64 RGB image.
        activations: Float [4, 4] (or [16]) grid of patch activations; negatives count as zero.
        max_value: Activation that gets the full overlay; defaults to the grid's maximum.
        max_alpha: Opacity of the overlay at `max_value`.

    Returns:
        A new 64×64 RGB image.
    """
    grid = _cell_grid(activations, "activations").astype(np.float32)
    return display.heatmap_overlay(
        _as_array(image), grid, CELL_SIZE, max_value=max_value, max_alpha=max_alpha
    )


class ToyWorld:
    """Seeded generator of toy scenes and concept fields.

    Args:
        seed: Seed of the world's own random stream; the same seed gives the same images.
        max_objects: Most objects per scene (1 or 2 by default).
    """

    def __init__(self, seed: int = 0, max_objects: int = 2) -> None:
        if not 1 <= max_objects <= NUM_CELLS:
            raise ValueError(f"max_objects must be in [1, {NUM_CELLS}], got {max_objects}.")
        self.seed = seed
        self.max_objects = max_objects
        self.rng = random.Random(seed)

    def sample_object(
        self,
        cell: int | None = None,
        rng: random.Random | None = None,
        exclude_cells: Sequence[int] = (),
        **fixed: str,
    ) -> ObjectSpec:
        """Draw one object; any attribute given in `fixed` (shape, color, texture, size, position) is kept.

        Args:
            cell: Cell to use; if None, a random free cell (restricted to `fixed["position"]` if given).
            rng: Random stream; defaults to the world's own.
            exclude_cells: Cells that are already taken.
            **fixed: Attribute values to keep, e.g. `color="red", position="top left"`.
        """
        rng = rng or self.rng
        unknown = set(fixed) - set(OBJECT_CATEGORIES)
        if unknown:
            raise ValueError(
                f"Unknown object attributes {sorted(unknown)}; expected {list(OBJECT_CATEGORIES)}."
            )
        for category, value in fixed.items():
            _check_concept(category, value)
        if cell is None:
            allowed = POSITION_CELLS[fixed["position"]] if "position" in fixed else range(NUM_CELLS)
            free = [c for c in allowed if c not in set(exclude_cells)]
            if not free:
                raise ValueError(f"No free cell left for position {fixed.get('position')!r}.")
            cell = rng.choice(free)
        elif "position" in fixed and CELL_POSITIONS[cell] != fixed["position"]:
            raise ValueError(f"Cell {cell} is at {CELL_POSITIONS[cell]!r}, not {fixed['position']!r}.")
        size = fixed.get("size") or rng.choice(SIZES)
        offset = (0, 0)
        if size == "small":
            offset = (rng.randint(-_SMALL_JITTER, _SMALL_JITTER), rng.randint(-_SMALL_JITTER, _SMALL_JITTER))
        return ObjectSpec(
            shape=fixed.get("shape") or rng.choice(SHAPES),
            color=fixed.get("color") or rng.choice(list(COLORS)),
            texture=fixed.get("texture") or rng.choice(TEXTURES),
            size=size,
            cell=cell,
            offset=offset,
        )

    def sample_scene(
        self,
        required: Sequence[Mapping[str, str]] = (),
        background: str | None = None,
        num_objects: int | None = None,
        rng: random.Random | None = None,
    ) -> Scene:
        """Draw a random scene.

        Args:
            required: Attribute dicts of objects that must appear (one dict per object), e.g.
                `[{"color": "red", "shape": "circle"}]`; unsaid attributes are random.
            background: Background name; random if None.
            num_objects: Number of objects; random in [1, max_objects] (at least len(required)) if None.
            rng: Random stream; defaults to the world's own.
        """
        rng = rng or self.rng
        if background is None:
            background = rng.choice(list(BACKGROUNDS))
        _check_concept("background", background)
        if num_objects is None:
            low = max(1, len(required))
            num_objects = rng.randint(low, max(low, self.max_objects))
        if num_objects < len(required):
            raise ValueError(f"num_objects={num_objects} is fewer than the {len(required)} required objects.")
        objects: list[ObjectSpec] = []
        # Objects with a required position choose their cells first so free objects cannot block them.
        order = sorted(range(len(required)), key=lambda i: "position" not in required[i])
        for index in order:
            objects.append(
                self.sample_object(rng=rng, exclude_cells=[o.cell for o in objects], **required[index])
            )
        while len(objects) < num_objects:
            objects.append(self.sample_object(rng=rng, exclude_cells=[o.cell for o in objects]))
        return Scene(objects=tuple(objects), background=background)

    def sample(self, n: int) -> list[tuple[Image.Image, Scene]]:
        """Draw `n` random scenes and their renders."""
        scenes = [self.sample_scene() for _ in range(n)]
        return [(render(scene), scene) for scene in scenes]

    @staticmethod
    def render(scene: Scene) -> Image.Image:
        """Render a scene to a 64×64 RGB PIL image."""
        return render(scene)

    def render_field(
        self, concept: str | None = None, rng: random.Random | None = None
    ) -> tuple[Image.Image, str]:
        """Render a concept field: an image that shows one concept everywhere, and its short answer.

        - A colour ("red"): the whole image in that colour; answer "red".
        - A texture ("striped"): the whole image in that texture, random colour; answer "striped".
        - A shape ("circle"), a size ("large") or "solid": a tiling (:meth:`render_tiling`) of
          objects that share only that concept; answer "circle". (A solid whole-image field would
          be a colour field under another answer.)
        - "blank", None, or a background: an empty background; answer "blank".

        Args:
            concept: The concept to show.
            rng: Random stream for the unsaid parts; defaults to the world's own.

        Raises:
            ValueError: for a position, or an unknown word, which have no field.
        """
        rng = rng or self.rng
        canvas = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        category = CONCEPT_CATEGORY.get(concept) if concept else None
        if concept is None or concept == "blank" or category == "background":
            background = concept if category == "background" else rng.choice(list(BACKGROUNDS))
            canvas[:] = BACKGROUNDS[background]
            return Image.fromarray(canvas, mode="RGB"), "blank"
        if category in ("shape", "size") or concept == "solid":
            return self.render_tiling(concept, rng=rng)
        if category == "color":
            canvas[:] = COLORS[concept]
        elif category == "texture":
            color = rng.choice(list(COLORS))
            canvas[:] = COLORS[color]
            tiled = np.tile(TEXTURE_PATTERNS[concept], (GRID_SIZE, GRID_SIZE))
            canvas[tiled] = SHADED_COLORS[color]
        else:
            raise ValueError(
                f"No concept field for {concept!r}; expected a colour, texture, shape, size, background or 'blank'."
            )
        return Image.fromarray(canvas, mode="RGB"), concept

    def sample_tiling(self, concept: str, rng: random.Random | None = None) -> Scene:
        """A scene with an object in every cell, the objects sharing ``concept`` and nothing else.

        Every other attribute is drawn at random per cell (the background once per scene), so with
        16 cells the named concept is, in practice, the only one all objects have in common. This is what
        steering one feature at every patch looks like to the model: the same concept everywhere.

        Args:
            concept: A colour, texture, shape or size.
            rng: Random stream; defaults to the world's own.

        Raises:
            ValueError: for a position, background or unknown word.
        """
        rng = rng or self.rng
        category = CONCEPT_CATEGORY.get(concept)
        if category not in ("color", "texture", "shape", "size"):
            raise ValueError(f"No concept tiling for {concept!r}; expected a colour, texture, shape or size.")
        tiles = tuple(
            self.sample_object(cell=cell, rng=rng, **{category: concept}) for cell in range(NUM_CELLS)
        )
        return Scene(objects=tiles, background=rng.choice(list(BACKGROUNDS)))

    def render_tiling(self, concept: str, rng: random.Random | None = None) -> tuple[Image.Image, str]:
        """Render :meth:`sample_tiling` and return the image with its answer (``concept``)."""
        return render(self.sample_tiling(concept, rng=rng)), concept
