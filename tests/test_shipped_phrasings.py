"""The shipped `shapes-phrasings` keyframe model (the shapes model fine-tuned on paraphrased
captions, docs/phrasings.md) follows phrasings its training never used, where `shapes` does not.
Measured on 400 held-out prompts with placement (docs/phrasings.md): colour 96.0% vs 39.0%, shape
95.4% vs 42.6%, size 97.0% vs 31.6%, background 98.8% vs 43.5%."""

import pytest

from keyframe.pretrained import SHIPPED_DIR, from_pretrained
from keyframe.vocabulary import load_vocabulary
from pipeline.cli import main
from pipeline.eval_keyframe import eval_keyframe, keyframe_model, keyframe_prompts

pytestmark = pytest.mark.usefixtures("one_thread_module")

SEED = 7
ATTRIBUTES = ("colour", "shape", "size")


def _accuracy(name: str, prompts) -> dict:
    generate = keyframe_model(name, steps=20, pipe=from_pretrained(name), place=False)
    return eval_keyframe(generate, prompts, batch_size=12, seed=SEED)["accuracy"]


@pytest.mark.slow
def test_paraphrase_model_follows_held_out_phrasings_the_shapes_model_misses():
    prompts = keyframe_prompts(12, 0, seed=SEED, phrasing="heldout")
    tuned, base = _accuracy("shapes-phrasings", prompts), _accuracy("shapes", prompts)
    print("held-out phrasings, 12 prompts:", {"shapes-phrasings": tuned, "shapes": base})
    for attribute in ATTRIBUTES:
        assert tuned[attribute] >= 0.7, attribute
    assert sum(tuned[a] for a in ATTRIBUTES) >= sum(base[a] for a in ATTRIBUTES) + 0.6


def test_paraphrase_model_records_the_phrasing_words_it_was_trained_on():
    words = load_vocabulary(SHIPPED_DIR / "shapes-phrasings").words
    assert {"crimson", "disc", "backdrop", "upper"} <= words
    assert "crimson" not in load_vocabulary(SHIPPED_DIR / "shapes").words


def test_a_paraphrase_the_default_model_refuses_points_to_the_model_that_knows_it(tmp_path, capsys):
    out = tmp_path / "k.png"
    prompt = "a big crimson disc in the upper-left corner, dark blue backdrop"
    assert main(["keyframe", prompt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "shipped model shapes-phrasings knows every word (--model shapes-phrasings)" in err
    assert err.count("\n") == 1 and not out.exists()
    assert main(["keyframe", "a knight walks into a castle", "--out", str(out)]) == 2
    assert "shipped model" not in capsys.readouterr().err  # no model knows a knight
