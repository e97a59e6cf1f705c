"""The parity fixture's generation rule: deterministic body model, official-layout weights and inputs (numpy only).

The rule lives in the fixture's own generator, `tests/fixtures/parity/make_fixture.py` (the script the official
outputs in `expected.npz` were produced with, shipped beside them); this module loads that one copy so that
`tools/check_parity.py`, the benchmark and the tests regenerate everything from a fixture's `fixture.json` (salt,
batch, input_seed) exactly as the fixture was made:

    body_model()                                  SMPL-format arrays of a random (not human-looking) body model
    official_state_dict(manifest, body, salt)     official key -> array, in an official checkpoint's layout
    inputs(batch, seed)                           the batch: img, joints, joints_mask
"""
import importlib.util
from pathlib import Path

GENERATOR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "parity" / "make_fixture.py"


def load_generator(path=GENERATOR):
    """The fixture generator module at `path` (a make_fixture.py)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the parity fixture's generator is missing (it ships with the repository in "
                                f"tests/fixtures/parity/)")
    spec = importlib.util.spec_from_file_location("parity_make_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_generator = load_generator()
body_model = _generator.body_model
official_state_dict = _generator.official_state_dict
inputs = _generator.inputs
