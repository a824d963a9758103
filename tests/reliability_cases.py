"""Bad inputs and faults a new user meets, with what zhprune-hub must do about each.

Every case runs the installed `zhprune-hub` console script in a sandbox directory of its own
(tests/integration/test_reliability.py) and checks: the exit code, one sentence on stderr that
contains `says` (click's usage message for usage errors), no traceback, and that the sandbox holds
exactly what it held before (nothing lost, nothing left behind) apart from the paths in `writes`.
`python scripts/reliability_table.py` renders this list into RELIABILITY.md.

To add a case for a new command, append a `Case` (and, if it needs one, a builder to BUILDERS).
Cases must stay cheap: tiny models, failures before any model is loaded where possible.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

USAGE = 2  # click's exit code for usage errors; ZhpruneError's default is the same
HUB_ERROR = 3


@dataclass(frozen=True)
class Case:
    """One invocation: `zhprune-hub ARGS` run in a fresh sandbox prepared by `setup` builders."""

    id: str
    args: tuple[str, ...]
    fault: str  # what is wrong, in words, for the table
    code: int
    says: str  # a fragment of the one sentence on stderr (whitespace and case are ignored)
    setup: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # {hub} and {token} are filled in
    usage: bool = False  # a click usage error: "Usage:" and the message, not "Error: ..."
    writes: tuple[str, ...] = ()  # sandbox paths the command may (and, with code 0, must) create
    signal: str | None = None  # "INT" or "KILL", sent once the output's staging directory exists
    watch: str = ".out.partial-*/.zhprune-output"  # the glob that triggers `signal`
    check: str | None = None  # name of an extra check in test_reliability.EXTRA_CHECKS
    hub: bool = False  # needs the local Hub server (HF_ENDPOINT and HF_TOKEN set)
    needs_non_root: bool = False  # relies on permission bits, which root ignores

    @property
    def command(self) -> str:
        """The sub-command under test; cases of the program itself have ids starting with `root-`."""
        return "(root)" if self.id.startswith("root-") or not self.args else self.args[0]


# --- sandbox builders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """Built once per session: a tiny llama checkpoint, its pruned output, GGUF files, results."""

    model: Path
    pruned: Path  # global layout (ships modeling_zhprune.py through auto_map)
    gguf_dir: Path  # tiny.F32.gguf and tiny.F16.gguf
    gguf_pruned: Path  # pruned from gguf_dir (the F32 file)
    results: Path  # evaluate model pruned --json
    text: Path  # a small English text file (calibration / perplexity)


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target) if source.is_dir() else shutil.copy2(source, target)
    return target


def _edit_json(path: Path, **changes: object) -> None:
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path.write_text(json.dumps(doc, indent=2))


def _marker(directory: Path) -> None:
    """A marker as a previous (finished, long dead) zhprune-hub run leaves it."""
    from zhprune_hub.outputs import OUTPUT_MARKER

    directory.mkdir(parents=True, exist_ok=True)
    record = {"tool": "zhprune-hub", "version": "0.0.0", "pid": 1, "host": "elsewhere", "state": "complete"}
    (directory / OUTPUT_MARKER).write_text(json.dumps(record))


def _truncate(path: Path, size: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:size])


def _huge_config(target: Path) -> None:
    target.mkdir()
    config = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 65536, "intermediate_size": 262144,
        "num_hidden_layers": 4096, "num_attention_heads": 512, "num_key_value_heads": 64, "vocab_size": 256000,
        "max_position_embeddings": 4096, "dtype": "bfloat16",
    }  # fmt: skip
    (target / "config.json").write_text(json.dumps(config))


def _gguf_of_another_family(target: Path) -> None:
    """A GGUF file whose header names an architecture this tool cannot prune (gemma3)."""
    import gguf
    import numpy as np

    target.parent.mkdir()
    writer = gguf.GGUFWriter(str(target), "gemma3")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _plan(name: str, text: str) -> Callable[[Path, Resources], None]:
    return lambda sb, res: (sb / name).write_text(text)


def _readonly(sb: Path, res: Resources) -> None:
    (sb / "ro").mkdir()
    (sb / "ro").chmod(0o555)


BUILDERS: dict[str, Callable[[Path, Resources], object]] = {
    "model": lambda sb, res: _copy(res.model, sb / "model"),
    "pruned": lambda sb, res: _copy(res.pruned, sb / "pruned"),
    "gguf": lambda sb, res: _copy(res.gguf_dir, sb / "gguf"),
    "gguf_pruned": lambda sb, res: _copy(res.gguf_pruned, sb / "gguf_pruned"),
    "results": lambda sb, res: _copy(res.results, sb / "results.json"),
    "text": lambda sb, res: _copy(res.text, sb / "corpus.txt"),
    "afile": lambda sb, res: (sb / "afile").write_text("a user's file\n"),
    "empty": lambda sb, res: (sb / "empty").mkdir(),
    "foreign_out": lambda sb, res: ((sb / "out").mkdir(), (sb / "out" / "notes.txt").write_text("mine\n")),
    "marked_parent_of_model": lambda sb, res: (_marker(sb / "X"), _copy(res.model, sb / "X" / "model")),
    "marked_model": lambda sb, res: (_copy(res.model, sb / "model"), _marker(sb / "model")),
    "data": lambda sb, res: ((sb / "data").mkdir(), _copy(res.text, sb / "data" / "corpus.txt")),
    "readonly": _readonly,
    "gemma3": lambda sb, res: (
        (sb / "gemma3").mkdir(),
        (sb / "gemma3" / "config.json").write_text(json.dumps({"model_type": "gemma3", "architectures": ["x"]})),
    ),
    "bad_json_config": lambda sb, res: ((sb / "badcfg").mkdir(), (sb / "badcfg" / "config.json").write_text("{nope")),
    "no_model_type": lambda sb, res: (
        (sb / "nomt").mkdir(),
        (sb / "nomt" / "config.json").write_text('{"hidden_size": 64}'),
    ),
    "huge": lambda sb, res: _huge_config(sb / "huge"),
    "gguf_gemma3": lambda sb, res: _gguf_of_another_family(sb / "ggemma" / "gemma3.gguf"),
    "damaged_gguf": lambda sb, res: (
        (sb / "dgguf").mkdir(),
        (sb / "dgguf" / "x.gguf").write_bytes(b"GGUF" + b"\0" * 60),
    ),
    "foreign_auto_map": lambda sb, res: (
        _copy(res.pruned, sb / "foreign"),
        _edit_json(
            sb / "foreign" / "config.json",
            auto_map={
                "AutoConfig": "other/repo--modeling_zhprune.ZhpruneLlamaConfig",
                "AutoModelForCausalLM": "other/repo--modeling_zhprune.ZhpruneLlamaForCausalLM",
            },
        ),
    ),
    "edited_code": lambda sb, res: (
        _copy(res.pruned, sb / "edited"),
        (sb / "edited" / "modeling_zhprune.py").write_text(
            (sb / "edited" / "modeling_zhprune.py").read_text() + "\nimport os  # added\n"
        ),
    ),
    "remote_tokenizer": lambda sb, res: (
        _copy(res.model, sb / "remotetok"),
        _edit_json(
            sb / "remotetok" / "tokenizer_config.json", auto_map={"AutoTokenizer": ["other/repo--tok.Tok", None]}
        ),
    ),
    "truncated": lambda sb, res: (_copy(res.pruned, sb / "trunc"), _truncate(sb / "trunc" / "model.safetensors", 4000)),
    "garbage_weights": lambda sb, res: (
        _copy(res.pruned, sb / "garbage"),
        (sb / "garbage" / "model.safetensors").write_bytes(b"\xff" * 5000),
    ),
    "empty_weights": lambda sb, res: (_copy(res.pruned, sb / "zero"), _truncate(sb / "zero" / "model.safetensors", 0)),
    "no_weights": lambda sb, res: (
        _copy(res.pruned, sb / "noweights"),
        (sb / "noweights" / "model.safetensors").unlink(),
    ),
    "config_lacks": lambda sb, res: (
        _copy(res.pruned, sb / "lacks"),
        _edit_json(sb / "lacks" / "config.json", hidden_size=None),
    ),
    "unsupported_pruned": lambda sb, res: (
        _copy(res.pruned, sb / "otherfam"),
        _edit_json(sb / "otherfam" / "config.json", model_type="gpt2"),
    ),
    "bad_report": lambda sb, res: (
        _copy(res.pruned, sb / "badreport"),
        (sb / "badreport" / "zhprune_pruning.json").write_text("{"),
    ),
    "bad_results": lambda sb, res: (sb / "bad.json").write_text("{not json"),
    "future_results": lambda sb, res: (sb / "future.json").write_text('{"schema_version": 99}'),
    "plan_empty_variants": _plan("empty.yaml", "defaults:\n  model: model\n  repo_id: me/x\nvariants: []\n"),
    "plan_syntax": _plan("syntax.yaml", "defaults:\n  model: [model\n"),
    "plan_typo": _plan("typo.yaml", "defaults:\n  model: model\n  repo_id: me/x\n  ratoi: 0.3\n"),
    "plan_list": _plan("list.yaml", "- model\n- me/x\n"),
    "plan_same_repo": _plan(
        "same.yaml",
        "defaults:\n  model: model\n  repo_id: me/same\nvariants:\n  - name: a\n  - name: b\n    ratio: 0.3\n",
    ),
    "plan_bad_ratio": _plan("ratio.yaml", "defaults:\n  model: model\n  repo_id: me/x\nvariants:\n  - ratio: 1.5\n"),
    "plan_binary": lambda sb, res: (sb / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage"),
    "bad_task_yaml": lambda sb, res: (
        (sb / "tasks").mkdir(),
        (sb / "tasks" / "mine.yaml").write_text("task: mine\n  x: [\n"),
    ),
    "short_arc": lambda sb, res: (
        (sb / "zd" / "zeroshot").mkdir(parents=True),
        (sb / "zd" / "zeroshot" / "arc_easy.jsonl").write_text(
            '{"query": "Question: q", "choices": ["a"], "gold": 0}\n'
        ),
    ),
}


def build(case: Case, sandbox: Path, resources: Resources) -> None:
    for name in case.setup:
        BUILDERS[name](sandbox, resources)


# --- the cases ------------------------------------------------------------------------------------------------

M = ("model",)  # the sandbox holds a tiny llama checkpoint at ./model
HUB = {"HF_ENDPOINT": "{hub}", "HF_TOKEN": "{token}"}
DEAD_ENDPOINT = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_not_a_real_token_0000"}


def c(case_id: str, command_line: str, fault: str, code: int, says: str, **options: object) -> Case:
    """A case from a shell-like command line (split with shlex, so quotes group words)."""
    import shlex

    return Case(case_id, tuple(shlex.split(command_line)), fault, code, says, **options)  # type: ignore[arg-type]


def u(case_id: str, command_line: str, fault: str, says: str, **options: object) -> Case:
    """A usage error: click prints its usage message and exits 2."""
    return c(case_id, command_line, fault, USAGE, says, usage=True, **options)


def _prune_flag_cases() -> list[Case]:
    """`prune` options that parse but are out of range: refused by the config, before anything runs."""
    bad = [
        ("ratio", "1.5", "ratio above 1"),
        ("ratio", "-0.1", "negative ratio"),
        ("ratio", "1", "ratio of exactly 1 (nothing left)"),
        ("ratio", "nan", "ratio NaN"),
        ("method", "foo", "unknown method"),
        ("layout", "foo", "unknown layout"),
        ("head-unit", "foo", "unknown head unit"),
        ("num-samples", "0", "zero calibration windows"),
        ("seq-len", "1", "calibration window of one token"),
        ("batch-size", "0", "batch size 0"),
        ("round-to", "0", "round-to zero"),
        ("correction", "1.5", "stream correction above 1"),
        ("temperature", "-1", "negative temperature"),
        ("temperature", "nan", "temperature NaN"),
        ("tau", "-1", "negative tau"),
        ("tau", "abc", "tau neither a number nor None"),
        ("tau", "nan", "tau NaN"),
        ("language", "fr", "unsupported language"),
        ("dtype", "float8", "unknown dtype"),
        ("device", "tpu", "unknown device"),
    ]
    slug = {"1.5": "1_5", "-0.1": "minus0_1", "-1": "minus1"}
    return [
        c(f"prune-{flag}-{slug.get(value, value)}", f"prune model -o out --{flag} {value}", fault, USAGE,
          f"Invalid --{flag}", setup=M)
        for flag, value, fault in bad
    ]  # fmt: skip


# fmt: off
CASES: list[Case] = [
    # --- the program itself -------------------------------------------------------------------------------------
    u("root-no-arguments", "", "no command at all", "Usage: zhprune-hub"),
    u("root-unknown-command", "nosuch", "unknown command", "No such command 'nosuch'"),
    u("root-typo-command", "prnue", "misspelt command", "No such command 'prnue'"),
    u("root-unknown-option", "--bogus", "unknown option", "No such option: --bogus"),
    c("root-version", "--version", "(none: prints the version)", 0, "zhprune-hub "),
    c("root-help", "prune --help", "(none: prints help)", 0, "Usage: zhprune-hub prune"),
    # --- prune: usage errors (click) ----------------------------------------------------------------------------
    u("prune-ratio-not-a-number", "prune model -o out --ratio abc", "ratio is not a number",
      "Invalid value for '--ratio'", setup=M),
    u("prune-missing-output", "prune model", "no -o", "Missing option '--output'", setup=M),
    u("prune-missing-model", "prune -o out", "no MODEL", "Missing argument"),
    u("prune-unknown-option", "prune model -o out --bogus", "unknown option", "No such option: --bogus", setup=M),
    u("prune-output-without-value", "prune model -o", "-o without a value", "requires an argument", setup=M),
    u("prune-samples-not-a-number", "prune model -o out --num-samples many", "integer option given a word",
      "Invalid value for '--num-samples'", setup=M),
    u("prune-flag-with-value", "prune model -o out --overwrite yes", "a flag given a value",
      "unexpected extra argument", setup=M),
    # --- prune: option values out of range ------------------------------------------------------------------------
    *_prune_flag_cases(),
    # --- prune: the model --------------------------------------------------------------------------------------------
    c("prune-model-path-missing", "prune ./nope -o out", "MODEL path does not exist", USAGE,
      "neither an existing directory nor a Hub id"),
    c("prune-model-three-parts", "prune a/b/c -o out", "MODEL is neither a path nor OWNER/NAME", USAGE,
      "neither an existing directory nor a Hub id"),
    c("prune-model-bad-id", "prune 'bad id' -o out", "Hub id with a space", USAGE, "is not a valid Hub repo id"),
    c("prune-model-double-dash", "prune me/x--y -o out", "Hub id with '--'", USAGE, "'--' and '..'"),
    c("prune-model-is-file", "prune afile -o out", "MODEL is a file", USAGE, "is a file", setup=("afile",)),
    c("prune-model-empty-dir", "prune empty -o out", "MODEL directory holds nothing", USAGE,
      "has no config.json and no .gguf file", setup=("empty",)),
    c("prune-unsupported-family", "prune gemma3 -o out", "model_type gemma3 (decided from config.json, nothing loaded)",
      USAGE, "Architecture 'gemma3' is not supported", setup=("gemma3",)),
    c("prune-config-not-json", "prune badcfg -o out", "config.json is not JSON", USAGE, "is not valid JSON",
      setup=("bad_json_config",)),
    c("prune-config-no-model-type", "prune nomt -o out", "config.json without model_type", USAGE, "has no model_type",
      setup=("no_model_type",)),
    c("prune-round-to-not-a-divisor", "prune model -o out --method magnitude --round-to 40",
      "--round-to that divides no MLP width (96)", USAGE, "--round-to 40 needs every MLP width to be a multiple of 40",
      setup=M),
    c("prune-seq-len-beyond-context", "prune model -o out --seq-len 100000",
      "--seq-len beyond max_position_embeddings (256)", USAGE, "longer than the 256 positions", setup=M),
    c("prune-revision-of-local-dir", "prune model -o out --revision v1", "--revision for a local directory", USAGE,
      "applies to Hub models", setup=M),
    c("prune-missing-cuda-device", "prune model -o out --device cuda:99", "a CUDA device this machine does not have",
      USAGE, "Device 'cuda:99'", setup=M),
    c("prune-gguf-file-missing", "prune gguf -o out --gguf-file missing.gguf", "--gguf-file not in the directory",
      USAGE, "was not found in", setup=("gguf",)),
    c("prune-gguf-damaged", "prune dgguf -o out", "the only GGUF file is damaged", USAGE, "GGUF file",
      setup=("damaged_gguf",)),
    c("prune-gguf-unsupported-family", "prune ggemma -o out",
      "a GGUF file of architecture gemma3 (decided from its header, nothing loaded)", USAGE,
      "Architecture 'gemma3", setup=("gguf_gemma3",)),  # transformers maps it to gemma3_text
    c("prune-calibration-unknown", "prune model -o out --calibration nope", "unknown calibration corpus", USAGE,
      "Unknown corpus 'nope'", setup=M),
    c("prune-calibration-file-missing", "prune model -o out --calibration missing.txt",
      "calibration file does not exist", USAGE, "does not exist", setup=M),
    c("prune-calibration-bad-mix", "prune model -o out --calibration c4:0.5,wikitext2:lots",
      "mix weight is not a number", USAGE, "has no weight", setup=M),
    c("prune-data-dir-missing", "prune model -o out --data-dir nodata", "--data-dir does not exist", USAGE,
      "Data directory 'nodata'", setup=M),
    c("prune-foreign-auto-map", "prune foreign -o out",
      "our modeling file, but auto_map points at another repository (other/repo--...)", USAGE,
      "needs code that is not zhprune-hub's own", setup=("foreign_auto_map",)),
    c("prune-edited-shipped-code", "prune edited -o out", "modeling_zhprune.py differs from ours by one line", USAGE,
      "needs code that is not zhprune-hub's own", setup=("edited_code",)),
    c("prune-tokenizer-needs-remote-code", "prune remotetok -o out", "tokenizer_config.json auto_map names foreign code",
      USAGE, "needs code that is not zhprune-hub's own", setup=("remote_tokenizer",)),
    # --- prune: the output directory -----------------------------------------------------------------------------------
    c("prune-output-is-file", "prune model -o afile", "-o names a file", USAGE, "is a file", setup=("model", "afile")),
    c("prune-output-under-file", "prune model -o afile/out", "-o inside a file", USAGE, "is not a directory",
      setup=("model", "afile")),
    c("prune-output-exists", "prune model -o out", "-o is a non-empty directory, no --overwrite", USAGE,
      "already exists and is not empty", setup=("model", "foreign_out")),
    c("prune-overwrite-foreign", "prune model -o out --overwrite", "--overwrite of a directory zhprune-hub did not write",
      USAGE, "was not written by zhprune-hub", setup=("model", "foreign_out")),
    c("prune-overwrite-parent-of-input", "prune X/model -o X --overwrite",
      "--overwrite of an earlier output that now holds the input model", USAGE, "contains",
      setup=("marked_parent_of_model",)),
    c("prune-overwrite-the-input", "prune model -o model --overwrite",
      "-o is the input model (even one carrying our marker)", USAGE, "which this command reads",
      setup=("marked_model",)),
    c("prune-output-inside-input", "prune model -o model/pruned", "-o inside the input model", USAGE, "is inside",
      setup=M),
    c("prune-overwrite-data-dir", "prune model -o data --overwrite --data-dir data", "-o is the data directory", USAGE,
      "which this command reads", setup=("model", "data")),
    c("prune-output-inside-data-dir", "prune model -o data/out", "-o inside $ZHPRUNE_DATA_DIR", USAGE, "is inside",
      setup=("model", "data"), env={"ZHPRUNE_DATA_DIR": "data"}),
    c("prune-output-unwritable-filesystem", "prune model -o /sys/zhprune-out",
      "-o on a filesystem that refuses new files (/sys)", USAGE, "cannot be written", setup=M),
    c("prune-output-read-only-dir", "prune model -o ro/out", "-o in a read-only (0555) directory", USAGE,
      "is not writable", setup=("model", "readonly"), needs_non_root=True),
    c("prune-disk-too-small", "prune huge -o out", "config.json of a model far larger than the free disk space", USAGE,
      "is free on", setup=("huge",)),
    # --- prune: faults during the run, and what must work --------------------------------------------------------------
    c("prune-sigint-while-saving", "prune model -o out --method magnitude",
      "SIGINT (Ctrl-C) while the checkpoint is being saved", 130, "Interrupted; nothing was written.", setup=M,
      signal="INT"),
    c("prune-sigkill-while-saving-then-rerun", "prune model -o out --method magnitude",
      "SIGKILL while saving leaves a staging directory; then the same command again", 0, "removed", setup=M,
      signal="KILL", writes=("out",), check="reclaimed"),
    c("prune-gguf-several-files", "prune gguf -o out --method magnitude --layout uniform",
      "a directory with two GGUF files (F32, F16) and no --gguf-file", 0, "using tiny.F32.gguf", setup=("gguf",),
      writes=("out",), check="bfloat16_output"),
    # --- prune: from the Hub --------------------------------------------------------------------------------------------
    c("prune-hub-missing-repo", "prune tester/missing -o out", "Hub repository does not exist", USAGE,
      "was not found on", env=HUB, hub=True),
    c("prune-hub-bad-revision", "prune tester/tiny -o out --revision nope", "--revision that is no branch, tag or commit",
      USAGE, "Revision 'nope' does not exist in 'tester/tiny'", env=HUB, hub=True),
    c("prune-hub-bad-commit", f"prune tester/tiny -o out --revision {'0' * 40}",
      "--revision that looks like a commit but is none", USAGE, "does not exist in 'tester/tiny'", env=HUB, hub=True),
    c("prune-hub-gguf-file-missing", "prune tester/tiny-gguf -o out --gguf-file x.gguf",
      "--gguf-file that the repository does not have", USAGE, "is not in 'tester/tiny-gguf'", env=HUB, hub=True),
    c("prune-hub-unreachable", "prune tester/tiny -o out", "HF_ENDPOINT that nothing listens on", USAGE,
      "could not be reached", env=DEAD_ENDPOINT),
    c("prune-hub-offline-not-cached", "prune tester/tiny -o out", "HF_HUB_OFFLINE=1 and the model is not in the cache",
      USAGE, "HF_HUB_OFFLINE is set", env={"HF_HUB_OFFLINE": "1"}),
    c("prune-hub-gguf-repo", "prune tester/tiny-gguf -o out --method magnitude --layout uniform",
      "(none: a Hub repository with two GGUF files; only the chosen one is downloaded)", 0, "using tiny.F32.gguf",
      env=HUB, hub=True, writes=("out",), check="one_gguf_downloaded"),
    # --- verify ------------------------------------------------------------------------------------------------------------
    u("verify-missing-directory", "verify", "no DIRECTORY", "Missing argument"),
    c("verify-nonexistent", "verify nope", "directory does not exist", USAGE, "has no config.json"),
    c("verify-no-weights", "verify noweights", "no .safetensors file", USAGE, "holds no .safetensors files",
      setup=("no_weights",)),
    c("verify-truncated-weights", "verify trunc", "model.safetensors cut at 4 kB", USAGE,
      "model.safetensors is damaged", setup=("truncated",)),
    c("verify-garbage-weights", "verify garbage", "model.safetensors overwritten with garbage", USAGE,
      "model.safetensors is damaged", setup=("garbage_weights",)),
    c("verify-empty-weights", "verify zero --json", "model.safetensors of 0 bytes (--json)", USAGE,
      "model.safetensors is damaged", setup=("empty_weights",)),
    c("verify-config-not-json", "verify badcfg", "config.json is not JSON", USAGE, "config.json is damaged",
      setup=("bad_json_config",)),
    c("verify-config-lacks-keys", "verify lacks", "config.json without hidden_size", USAGE, "lacks hidden_size",
      setup=("config_lacks",)),
    c("verify-unsupported-family", "verify otherfam", "config.json of another family (gpt2)", USAGE,
      "Architecture 'gpt2' is not supported", setup=("unsupported_pruned",)),
    c("verify-damaged-report", "verify badreport", "zhprune_pruning.json is not JSON", USAGE,
      "zhprune_pruning.json is damaged", setup=("bad_report",)),
    c("verify-base-missing", "verify pruned --base ./nope", "--base path does not exist", USAGE,
      "neither an existing directory nor a Hub id", setup=("pruned",)),
    c("verify-base-bad-id", "verify pruned --base 'bad id'", "--base is a malformed Hub id", USAGE,
      "is not a valid Hub repo id", setup=("pruned",)),
    c("verify-gguf-base", "verify gguf_pruned --base gguf",
      "(none: a checkpoint pruned from a GGUF file, checked against that GGUF)", 0, "base-counts",
      setup=("gguf", "gguf_pruned")),
    # --- evaluate ------------------------------------------------------------------------------------------------------------
    u("evaluate-no-model", "evaluate", "no MODEL", "Missing argument"),
    c("evaluate-path-missing", "evaluate ./nope", "model path does not exist", USAGE, "neither an existing"),
    c("evaluate-bad-id", "evaluate 'bad id'", "malformed Hub id", USAGE, "is not a valid Hub repo id"),
    c("evaluate-second-model-missing", "evaluate model ./nope --tasks none --ppl none",
      "the second model does not exist (found before the first is loaded)", USAGE, "neither an existing directory",
      setup=M),
    c("evaluate-json-is-dir", "evaluate model --json empty", "--json names a directory", USAGE, "is a directory",
      setup=("model", "empty")),
    c("evaluate-json-unwritable", "evaluate model --json /sys/results.json",
      "--json where no file can be created (/sys)", USAGE, "cannot be written", setup=M),
    c("evaluate-json-under-file", "evaluate model --json afile/results.json", "--json inside a file", USAGE,
      "is not a directory", setup=("model", "afile")),
    c("evaluate-json-read-only-dir", "evaluate model --json ro/results.json", "--json in a read-only directory", USAGE,
      "is not writable", setup=("model", "readonly"), needs_non_root=True),
    c("evaluate-unknown-task", "evaluate model --tasks nosuchtask --ppl none", "zero-shot task that is not supported",
      USAGE, "'nosuchtask' is not supported", setup=M),
    c("evaluate-task-yaml-malformed", "evaluate model --tasks mine --ppl none --include-path tasks",
      "a malformed task YAML under --include-path", USAGE, "under --include-path is malformed",
      setup=("model", "bad_task_yaml")),
    c("evaluate-task-data-offline", "evaluate model --tasks arc_challenge --ppl none --limit 2 --data-dir data",
      "an lm-eval task whose data is only on the Hub, offline", USAGE, "needs the dataset allenai/ai2_arc",
      setup=("model", "data")),
    c("evaluate-task-file-wrong-shape", "evaluate model --tasks arc_easy --ppl none --data-dir zd",
      "a one-row file in place of arc_easy.jsonl", USAGE, "has 1 rows, not the upstream 2376",
      setup=("model", "short_arc")),
    c("evaluate-unknown-corpus", "evaluate model --ppl nope --tasks none", "unknown perplexity corpus", USAGE,
      "Unknown corpus 'nope'", setup=M),
    c("evaluate-corpus-file-missing", "evaluate model --ppl missing.txt --tasks none", "perplexity file does not exist",
      USAGE, "does not exist", setup=M),
    c("evaluate-batch-size-word", "evaluate model --batch-size lots --tasks none --ppl none",
      "--batch-size neither auto nor a number", USAGE, "lots", setup=M),
    u("evaluate-seq-len-word", "evaluate model --seq-len long", "--seq-len not a number",
      "Invalid value for '--seq-len'", setup=M),
    u("evaluate-seq-len-one", "evaluate model --seq-len 1", "--seq-len 1", "Invalid value for '--seq-len'", setup=M),
    u("evaluate-limit-zero", "evaluate model --limit 0", "--limit 0", "Invalid value for '--limit'", setup=M),
    u("evaluate-max-tokens-one", "evaluate model --max-tokens 1", "--max-tokens 1", "Invalid value for '--max-tokens'",
      setup=M),
    c("evaluate-data-dir-missing", "evaluate model --data-dir nodata --tasks none --ppl none",
      "--data-dir does not exist", USAGE, "Data directory 'nodata'", setup=M),
    c("evaluate-unknown-dtype", "evaluate model --dtype float8 --tasks none --ppl none", "unknown dtype", USAGE,
      "--dtype 'float8'", setup=M),
    c("evaluate-unknown-device", "evaluate model --device tpu --tasks none --ppl none", "unknown device", USAGE,
      "Device 'tpu'", setup=M),
    c("evaluate-foreign-code", "evaluate foreign --tasks none --ppl none",
      "auto_map pointing at another repository, no --trust-remote-code", USAGE,
      "needs code that is not zhprune-hub's own", setup=("foreign_auto_map",)),
    # --- datasets ------------------------------------------------------------------------------------------------------------
    c("datasets-unknown-name", "datasets nope", "unknown corpus", USAGE, "Unknown corpus 'nope'"),
    c("datasets-data-dir-missing", "datasets --data-dir nodata", "--data-dir does not exist", USAGE,
      "Data directory 'nodata'"),
    u("datasets-unknown-option", "datasets --bogus", "unknown option", "No such option"),
    c("datasets-list", "datasets", "(none: lists the corpora)", 0, "wikitext_zh"),
    c("datasets-json", "datasets --json c4", "(none: one corpus as JSON)", 0, '"name": "c4"'),
    # --- card --------------------------------------------------------------------------------------------------------------------
    u("card-missing-base", "card pruned", "no --base", "Missing option '--base'", setup=("pruned",)),
    c("card-not-a-pruned-dir", "card model --base model --results results.json", "DIR was not written by prune", USAGE,
      "has no zhprune_pruning.json", setup=("model", "results")),
    c("card-results-missing", "card pruned --base model --results missing.json", "--results file does not exist",
      USAGE, "does not exist", setup=("model", "pruned")),
    c("card-results-not-json", "card pruned --base model --results bad.json", "--results is not JSON", USAGE,
      "is not valid JSON", setup=("model", "pruned", "bad_results")),
    c("card-results-other-schema", "card pruned --base model --results future.json",
      "--results of another schema version", USAGE, "has schema_version 99", setup=("model", "pruned", "future_results")),
    c("card-bad-repo-id", "card pruned --base model --results results.json --repo-id 'bad id'", "--repo-id with a space",
      USAGE, "is not a valid Hub repo id", setup=("model", "pruned", "results")),
    c("card-base-missing", "card pruned --base ./nope --results results.json", "--base does not exist", USAGE,
      "neither an existing directory", setup=("pruned", "results")),
    c("card-damaged-report", "card badreport --base model --results results.json", "zhprune_pruning.json is not JSON",
      USAGE, "is damaged", setup=("model", "bad_report", "results")),
    # --- push --------------------------------------------------------------------------------------------------------------------
    c("push-bad-repo-id", "push pruned --repo-id 'bad id'", "--repo-id with a space", USAGE,
      "is not a valid Hub repo id", setup=("pruned",)),
    c("push-repo-id-three-parts", "push pruned --repo-id a/b/c", "--repo-id with two slashes", USAGE,
      "only one '/' is allowed", setup=("pruned",)),
    c("push-repo-id-double-dash", "push pruned --repo-id me/x--y", "--repo-id with '--'", USAGE,
      "'--' and '..' are not allowed", setup=("pruned",)),
    c("push-repo-id-no-owner", "push pruned --repo-id name-only", "--repo-id without an owner", USAGE,
      "is not of the form OWNER/NAME", setup=("pruned",)),
    c("push-repo-id-dot-git", "push pruned --repo-id me/x.git", "--repo-id ending in .git", USAGE,
      "may not end in '.git'", setup=("pruned",)),
    u("push-missing-repo-id", "push pruned", "no --repo-id", "Missing option '--repo-id'", setup=("pruned",)),
    c("push-folder-missing", "push nope --repo-id tester/x", "DIR does not exist", HUB_ERROR,
      "does not exist; nothing was pushed", env=HUB, hub=True),
    c("push-folder-empty", "push empty --repo-id tester/x", "DIR is empty", HUB_ERROR, "has no files to push",
      setup=("empty",), env=HUB, hub=True),
    c("push-no-token", "push pruned --repo-id tester/x", "no HF_TOKEN and no login", HUB_ERROR, "No Hub token found",
      setup=("pruned",)),
    c("push-unreachable", "push pruned --repo-id tester/x", "HF_ENDPOINT that nothing listens on", HUB_ERROR,
      "could not be reached", setup=("pruned",), env=DEAD_ENDPOINT),
    c("push-rejected-token", "push pruned --repo-id tester/x", "a token the Hub rejects", HUB_ERROR,
      "rejected the token", setup=("pruned",), env={"HF_ENDPOINT": "{hub}", "HF_TOKEN": "hf_wrong_token_000000"},
      hub=True),
    c("push-prune-output", "push pruned --repo-id tester/pushed",
      "(none: a prune output; its local marker file must not be published)", 0, "commit:", setup=("pruned",), env=HUB,
      hub=True, check="marker_not_on_hub"),
    # --- publish -------------------------------------------------------------------------------------------------------------------
    c("publish-nothing", "publish --dry-run", "neither MODEL nor --config", USAGE, "has no model"),
    c("publish-no-repo-id", "publish model --dry-run", "no --repo-id", USAGE, "has no repo id", setup=M),
    c("publish-bad-repo-id", "publish model --repo-id 'bad id' --dry-run", "--repo-id with a space", USAGE,
      "is not a valid Hub repo id", setup=M),
    c("publish-repo-id-double-dot", "publish model --repo-id me/x..y --dry-run", "--repo-id with '..'", USAGE,
      "'--' and '..' are not allowed", setup=M),
    c("publish-owner-placeholder", "publish model --repo-id '{owner}/x' --dry-run", "{owner} template without an owner",
      USAGE, "uses {owner} but the plan sets no `owner`", setup=M),
    c("publish-unknown-placeholder", "publish model --repo-id 'me/{size}' --dry-run", "unknown template placeholder",
      USAGE, "unknown placeholder {size}", setup=M),
    c("publish-ratio-too-big", "publish model --repo-id me/x --ratio 2 --dry-run", "--ratio 2", USAGE,
      "--ratio: input should be less than 1", setup=M),
    c("publish-negative-tau", "publish model --repo-id me/x --tau -1 --dry-run", "--tau -1", USAGE,
      "--tau: input should be greater than or equal to 0", setup=M),
    c("publish-eval-batch-size-word", "publish model --repo-id me/x --eval-batch-size lots --dry-run",
      "--eval-batch-size neither auto nor a number", USAGE, "--eval-batch-size", setup=M),
    c("publish-unsupported-family", "publish gemma3 --repo-id me/x --dry-run",
      "model_type gemma3: refused before any stage runs", USAGE, "Architecture 'gemma3' is not supported",
      setup=("gemma3",)),
    c("publish-seq-len-beyond-context", "publish model --repo-id me/x --seq-len 100000 --dry-run",
      "--seq-len beyond max_position_embeddings", USAGE, "longer than the 256 positions", setup=M),
    c("publish-model-revision-of-local-dir", "publish model --repo-id me/x --model-revision v1 --dry-run",
      "--model-revision for a local directory", USAGE, "applies to Hub models", setup=M),
    c("publish-foreign-code", "publish foreign --repo-id me/x --dry-run", "auto_map pointing at another repository",
      USAGE, "needs code that is not zhprune-hub's own", setup=("foreign_auto_map",)),
    c("publish-evaluates-nothing", "publish model --repo-id me/x --tasks none --ppl none --dry-run",
      "--tasks none --ppl none: the card would have no metric (refused before the prune, not after)", USAGE,
      "needs at least one metric", setup=M),
    c("publish-no-token", "publish model --repo-id me/x", "a real publish without HF_TOKEN", HUB_ERROR,
      "No Hub token found", setup=M),
    c("publish-work-dir-is-file", "publish model --repo-id me/x --work-dir afile --dry-run", "--work-dir names a file",
      USAGE, "is not a directory", setup=("model", "afile")),
    c("publish-bad-model-id", "publish 'bad id' --repo-id me/x --dry-run", "MODEL is a malformed Hub id", USAGE,
      "is not a valid Hub repo id"),
    c("publish-plan-missing", "publish --config missing.yaml", "--config file does not exist", USAGE, "does not exist"),
    c("publish-plan-is-dir", "publish --config empty", "--config names a directory", USAGE, "cannot be read",
      setup=("empty",)),
    c("publish-plan-not-utf8", "publish --config binary.yaml", "--config file is not text", USAGE, "cannot be read",
      setup=("plan_binary",)),
    c("publish-plan-syntax", "publish --config syntax.yaml", "YAML syntax error", USAGE, "is not valid YAML at line",
      setup=("plan_syntax",)),
    c("publish-plan-empty-variants", "publish --config empty.yaml --dry-run", "a plan with `variants: []`", USAGE,
      "variants: the list is empty", setup=("model", "plan_empty_variants")),
    c("publish-plan-typo", "publish --config typo.yaml --dry-run", "misspelt field (ratoi)", USAGE,
      "did you mean 'ratio'", setup=("model", "plan_typo")),
    c("publish-unknown-task", "publish model --repo-id me/x --dry-run --tasks nosuchtask",
      "an unknown zero-shot task, caught before pruning", USAGE, "'nosuchtask' is not supported", setup=M),
    c("publish-plan-list", "publish --config list.yaml --dry-run", "a plan that is a YAML list", USAGE,
      "must be a mapping", setup=("plan_list",)),
    c("publish-plan-same-repo", "publish --config same.yaml --dry-run", "two variants publishing to one repository",
      USAGE, "both publish to 'me/same'", setup=("model", "plan_same_repo")),
    c("publish-plan-bad-ratio", "publish --config ratio.yaml --dry-run", "a variant with ratio 1.5", USAGE,
      "variants[0]", setup=("model", "plan_bad_ratio")),
    c("publish-sigint-after-pull",
      "publish model --repo-id me/x --dry-run --method magnitude --tasks none --ppl corpus.txt",
      "SIGINT once the pull stage has finished", 130, "Interrupted; finished stages are kept in the work directory",
      setup=("model", "text"), signal="INT", watch=".zhprune/work/*/pull/stage.json", writes=(".zhprune",)),
    # --- export ------------------------------------------------------------------------------------------------------------
    c("export-nonexistent", "export nope", "directory does not exist", USAGE, "is not a directory"),
    c("export-global-layout", "export pruned", "a global-layout checkpoint (its own modeling code)", USAGE,
      "prune again with --layout uniform", setup=("pruned",)),
    c("export-foreign-code", "export foreign", "a checkpoint whose auto_map names another repository's code", USAGE,
      "ships its own modeling code", setup=("foreign_auto_map",)),
    c("export-bad-weights", "export model --weights int3", "unknown weight format", USAGE, "Invalid --weights",
      setup=M),
    c("export-bad-format", "export model --format onnx", "a format other than openvino", USAGE, "Invalid --format",
      setup=M),
    c("export-output-foreign", "export model -o out --overwrite", "--output holds a user's files (no marker)", USAGE,
      "was not written by zhprune-hub", setup=("model", "foreign_out")),
    c("export-no-environment", "export model", "ZHPRUNE_EXPORT_PYTHON unset (no export environment)", USAGE,
      "needs its own environment: run `bash scripts/install_export_env.sh", setup=M),
    c("export-environment-missing", "export model", "ZHPRUNE_EXPORT_PYTHON names no file", USAGE,
      "is not an executable Python interpreter", setup=M, env={"ZHPRUNE_EXPORT_PYTHON": "./no/python"}),
]
# fmt: on


def render_table(cases: list[Case] | None = None) -> str:
    """RELIABILITY.md's table: command, input, fault, expected exit code and message."""
    rows = [
        "| # | command | input | what is wrong | exit | stderr says |",
        "|---:|---|---|---|---:|---|",
    ]
    for number, case in enumerate(cases or CASES, 1):
        shown = " ".join(_shell_word(a) for a in case.args) or "(nothing)"
        extra = []
        if case.env:
            extra.append(" ".join(f"{k}={v}" for k, v in case.env.items()))
        if case.signal:
            extra.append(f"SIG{case.signal}")
        where = f" ({'; '.join(extra)})" if extra else ""
        says = ("usage message: " if case.usage else "") + case.says
        rows.append(
            f"| {number} | {case.command} | `zhprune-hub {shown}`{_escape(where)} | {_escape(case.fault)} | "
            f"{case.code} | {_escape(says)} |"
        )
    return "\n".join(rows) + "\n"


def _shell_word(arg: str) -> str:
    import shlex

    return shlex.quote(arg).replace("|", "\\|")


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
