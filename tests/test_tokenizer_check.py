import json
import shutil

from transformers import AutoTokenizer

from evalsuite.models import EMBEDDED
from evalsuite.variants import tokenizer_fingerprint

TINY = EMBEDDED["embedded:tiny"]
FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def copy_tokenizer(path):
    path.mkdir()
    for name in FILES:
        shutil.copy(TINY / name, path / name)
    return path


def fingerprint(path):
    return tokenizer_fingerprint(AutoTokenizer.from_pretrained(path))


def test_an_identical_tokenizer_matches_and_each_change_is_caught(tmp_path):
    baseline = fingerprint(TINY)
    assert fingerprint(copy_tokenizer(tmp_path / "same")) == baseline

    eos = copy_tokenizer(tmp_path / "eos")
    vocab = json.loads((eos / "tokenizer.json").read_text())["model"]["vocab"]
    config = json.loads((eos / "tokenizer_config.json").read_text())
    config["eos_token"] = next(token for token in vocab if token != config["eos_token"])
    (eos / "tokenizer_config.json").write_text(json.dumps(config))
    changed = fingerprint(eos)
    assert changed["special tokens"] != baseline["special tokens"] and changed["vocab"] == baseline["vocab"]

    template = copy_tokenizer(tmp_path / "template")
    (template / "chat_template.jinja").write_text((TINY / "chat_template.jinja").read_text().replace("User", "Human"))
    changed = fingerprint(template)
    assert changed["chat template"] != baseline["chat template"] and changed["vocab"] == baseline["vocab"]
