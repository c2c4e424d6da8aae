"""The README must stay true: its commands, options, Python names, paths and set-up steps.

Everything here reads README.md (and, for commands, links and paths, docs/*.md) and checks
it against the code (the command line's click parsers, the scripts' options, the package's
names read from its source, the repository's files, the Makefile) without importing torch
or running a network, so it takes about a second. Each check names the line that went wrong.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import pytest

from rave.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Top-level folders of the repository whose files the README may name as they are (outputs
# such as runs/... or examples/enhanced are made at run time and are not checked).
TRACKED_TOPS = ("src/", "docs/", "configs/", "scripts/", "benchmarks/", "tests/")


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, first line number) of every ``` block, read line by line."""
    blocks, language, body, start = [], None, [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if language is None:
                language, body, start = line[3:].strip(), [], number + 1
            else:
                blocks.append((language, "\n".join(body), start))
                language = None
        elif language is not None:
            body.append(line)
    assert language is None, "README.md has an unclosed ``` block"
    return blocks


def without_blocks(text: str) -> str:
    """The text with its fenced blocks blanked (line numbers kept)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def inline_spans(text: str) -> list[str]:
    """Inline `code` spans outside fenced blocks, whitespace (line breaks) collapsed."""
    return [re.sub(r"\s+", " ", span) for span in re.findall(r"`([^`]+)`", without_blocks(text))]


def shell_lines(text: str) -> list[tuple[str, int]]:
    """(command, line number) of every line of the bash/sh blocks, comments removed."""
    lines = []
    for language, body, start in fenced_blocks(text):
        if language not in ("bash", "sh", "shell"):
            continue
        for offset, line in enumerate(body.splitlines()):
            command = " ".join(shlex.split(line, comments=True))
            if command:
                lines.append((command, start + offset))
    return lines


def rave_invocations(text: str, name: str = "README.md") -> list[tuple[list[str], str]]:
    """(argv after ``rave``, where) of every ``rave COMMAND ...`` in blocks and inline code."""
    found = []
    for command, number in shell_lines(text):
        words = shlex.split(command)
        if "rave" in words[:-1]:  # also `torchrun ... --no-python rave train ...`
            found.append((words[words.index("rave") + 1 :], f"{name}:{number}: {command}"))
    for span in inline_spans(text):
        words = span.split()
        if len(words) >= 2 and words[0] == "rave" and words[1] in COMMANDS:
            found.append((words[1:], f"{name} inline: `{span}`"))
    return found


def command_options(name: str) -> set[str]:
    command = main.get_command(click.Context(main), name)
    assert command is not None, f"rave {name}: no such command"
    options = {"--help", "-h"}
    for param in command.params:
        options.update(param.opts)
        options.update(param.secondary_opts)
    return {option for option in options if option.startswith("-")}


def option_words(words: list[str]) -> list[str]:
    """The option names among a command line's words (``--set`` values and the like skipped)."""
    return [
        word.split("=", 1)[0] for word in words if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", word)
    ]


# --- commands and options --------------------------------------------------------------


def test_readme_names_rave_commands_at_all():
    # the parser below must keep finding the README's commands, or the checks test nothing
    names = {argv[0] for argv, _ in rave_invocations(readme_text()) if argv}
    assert {"enhance", "models", "env", "export", "train", "evaluate", "serve"} <= names


def test_every_rave_command_in_the_readme_exists():
    unknown = [where for argv, where in rave_invocations(readme_text()) if argv[0] not in COMMANDS]
    assert not unknown, "README names rave commands that do not exist:\n" + "\n".join(unknown)


def test_every_option_of_a_rave_command_in_the_readme_is_accepted():
    wrong = []
    for argv, where in rave_invocations(readme_text()):
        if argv[0] not in COMMANDS:
            continue
        accepted = command_options(argv[0])
        bad = [option for option in option_words(argv[1:]) if option not in accepted]
        if bad:
            wrong.append(f"{where}  -> rave {argv[0]} does not accept {', '.join(bad)}")
    assert not wrong, "README shows options the command line refuses:\n" + "\n".join(wrong)


def test_every_bare_option_in_the_readme_belongs_to_some_rave_command():
    # Inline spans that are just options (`--max-upload-mb`, `-o/--output`, `--opset 11..20`)
    every = set().union(*(command_options(name) for name in COMMANDS))
    wrong = []
    for span in inline_spans(readme_text()):
        if not span.startswith("-"):
            continue
        for part in span.split()[0].split("/"):
            if part.startswith("-") and part not in every:
                wrong.append(f"`{span}`: no rave command has {part}")
    assert not wrong, "\n".join(wrong)


def script_options(path: Path) -> set[str]:
    """Every string constant that looks like an option in a script (its argparse flags)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"--?[A-Za-z][\w-]*", node.value)
    }


def script_option_problems(text: str) -> tuple[list[str], int]:
    """`scripts/X.py --opt` and `benchmarks/X.py --opt` spans whose script has no --opt."""
    wrong, checked = [], 0
    for span in inline_spans(text):
        words = span.replace("[", " ").replace("]", " ").split()
        for index, word in enumerate(words):
            if not re.fullmatch(r"(scripts|benchmarks)/\w+\.py", word):
                continue
            defined = script_options(ROOT / word)
            checked += 1
            for option in option_words(words[index + 1 :]):
                if option not in defined:
                    wrong.append(f"`{span}`: {word} has no {option}")
    return wrong, checked


def test_every_option_of_a_script_in_the_readme_is_defined_by_that_script():
    wrong, checked = script_option_problems(readme_text())
    assert checked >= 3, "the README's script commands are no longer found"
    assert not wrong, "\n".join(wrong)


DOCS = ("docs/method.md", "docs/model_card.md", "docs/data_card.md")


@pytest.mark.parametrize("name", DOCS)
def test_commands_in_the_docs_are_accepted(name):
    # the same checks, lighter, for the docs' rave and script commands
    text = (ROOT / name).read_text(encoding="utf-8")
    wrong = []
    for argv, where in rave_invocations(text, name):
        if argv[0] not in COMMANDS:
            wrong.append(f"{where}: no command rave {argv[0]}")
            continue
        accepted = command_options(argv[0])
        wrong += [f"{where}: no {o}" for o in option_words(argv[1:]) if o not in accepted]
    wrong += script_option_problems(text)[0]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", DOCS)
def test_links_and_paths_in_the_docs_exist(name):
    path = ROOT / name
    text = path.read_text(encoding="utf-8")
    missing = [
        link
        for link in re.findall(r"\]\(([^)#\s]+)\)", text)
        if not link.startswith("http") and not (path.parent / link).exists()
    ]
    missing += [p for p in named_paths(text) if not path_exists(p)]
    assert not missing, f"{name} names what does not exist: {missing}"


# --- stated defaults -------------------------------------------------------------------


def option_default(command: str, option: str) -> object:
    parsed = main.get_command(click.Context(main), command)
    assert parsed is not None
    for param in parsed.params:
        if option in param.opts:
            return param.default
    raise AssertionError(f"rave {command} has no {option}")


def flat_readme() -> str:
    return re.sub(r"\s+", " ", readme_text())


@pytest.mark.parametrize(
    ("command", "option", "pattern"),
    [
        ("export", "--opset", r"`--opset \d+\.\.\d+` \(default (\d+)\)"),
        ("enhance", "--strength", r"`--strength S` \(default (\d+)"),
        ("serve", "--time-limit", r"`--time-limit` per photo \(default (\d+) s\)"),
        ("serve", "--max-pixels", r"`--max-pixels` \(default (\d+) M"),
        ("enhance", "--device", r"`--device` defaults to `(\w+)`"),
    ],
)
def test_defaults_the_readme_states_are_the_parsers(command, option, pattern):
    match = re.search(pattern, flat_readme())
    assert match, f"README no longer states the default of rave {command} {option} ({pattern})"
    stated = match.group(1)
    actual = option_default(command, option)
    if option == "--max-pixels":
        assert str(actual).upper() == f"{stated}M", (command, option, stated, actual)
    elif isinstance(actual, (int, float)):
        assert float(stated) == float(actual), (command, option, stated, actual)
    else:
        assert stated == str(actual), (command, option, stated, actual)


def test_opset_range_the_readme_states_is_the_parsers():
    match = re.search(r"`--opset (\d+)\.\.(\d+)`", flat_readme())
    assert match, "README no longer states --opset's range"
    parsed = main.get_command(click.Context(main), "export")
    assert parsed is not None
    (opset,) = [param for param in parsed.params if "--opset" in param.opts]
    assert isinstance(opset.type, click.IntRange)
    assert (opset.type.min, opset.type.max) == (int(match.group(1)), int(match.group(2)))


# --- Python names ----------------------------------------------------------------------


def python_blocks() -> list[str]:
    return [body for language, body, _ in fenced_blocks(readme_text()) if language == "python"]


def test_readme_has_a_python_example():
    assert python_blocks(), "README.md lost its ```python block (or these tests lost it)"


# The names are resolved statically, from the source (no torch import: this file stays fast).
# A name is found in a module as a def, a class, an assignment, an import (followed) or a
# submodule; in ``rave`` itself only through its lazy exports, which are what a user gets
# from ``import rave`` alone.
SRC = ROOT / "src"


def module_tree(module: str) -> ast.Module | None:
    base = SRC / Path(*module.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return ast.parse(path.read_text(encoding="utf-8"))
    return None


def lazy_exports() -> dict[str, str]:
    """``rave/__init__.py``'s ``_LAZY_EXPORTS``: public name -> module."""
    tree = module_tree("rave")
    assert tree is not None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "_LAZY_EXPORTS" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("rave/__init__.py has no _LAZY_EXPORTS")


def find_in_module(module: str, name: str, depth: int = 0):
    """The definition of ``module.name`` (a def or class node, a module name, or "value")."""
    if module == "rave":
        exports = lazy_exports()
        if name not in exports:
            return None
        target = exports[name]
        return target if target == f"rave.{name}" else find_in_module(target, name, depth + 1)
    tree = module_tree(module)
    if tree is None or depth > 10:
        return None
    if module_tree(f"{module}.{name}") is not None:
        return f"{module}.{name}"
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return find_in_module(node.module, alias.name, depth + 1)
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return "value"
    return None


def find_in_class(node: ast.ClassDef, name: str):
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.ClassDef)) and item.name == name:
            return item
        if (
            isinstance(item, ast.AnnAssign)
            and isinstance(item.target, ast.Name)
            and item.target.id == name
        ):
            return "value"
    for item in ast.walk(node):  # self.name = ... in a method
        if (
            isinstance(item, ast.Attribute)
            and isinstance(item.ctx, ast.Store)
            and isinstance(item.value, ast.Name)
            and item.value.id == "self"
            and item.attr == name
        ):
            return "value"
    return "unknown" if node.bases else None  # inherited: not followed


def resolve_chain(parts: list[str], imported: frozenset[str] = frozenset()):
    """Resolve ``rave.a.b.c`` statically: the final definition, or None with the failing part.

    ``imported``: submodules the code imports itself (``import rave.network``).
    """
    found, first = "rave", 1
    if len(parts) > 1 and f"rave.{parts[1]}" in imported:
        found, first = f"rave.{parts[1]}", 2
    for index, part in enumerate(parts[first:], first):
        if isinstance(found, str) and found not in ("value", "unknown"):
            found = find_in_module(found, part)
        elif isinstance(found, ast.ClassDef):
            found = find_in_class(found, part)
        else:
            return "unknown", None
        if found is None:
            return None, ".".join(parts[: index + 1])
    return found, None


def signature_problem(found, node: ast.Call) -> str | None:
    """Why ``node``'s arguments do not fit the def or class ``found``, or None."""
    method = False
    if isinstance(found, ast.ClassDef):
        init = next(
            (i for i in found.body if isinstance(i, ast.FunctionDef) and i.name == "__init__"),
            None,
        )
        if init is None:
            if not any("dataclass" in ast.unparse(d) for d in found.decorator_list):
                return None
            fields = [
                i.target.id
                for i in found.body
                if isinstance(i, ast.AnnAssign) and isinstance(i.target, ast.Name)
            ]
            positional, keywords, varargs, varkw = fields, set(fields), False, False
            return _fit(node, positional, keywords, varargs, varkw)
        found, method = init, True
    if not isinstance(found, ast.FunctionDef):
        return None
    args = found.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    if method or (positional and positional[0] in ("self", "cls")):
        positional = positional[1:]
    keywords = {a.arg for a in args.args + args.kwonlyargs}
    return _fit(node, positional, keywords, args.vararg is not None, args.kwarg is not None)


def _fit(node, positional, keywords, varargs, varkw) -> str | None:
    if len(node.args) > len(positional) and not varargs:
        return f"takes {len(positional)} positional arguments, the README gives {len(node.args)}"
    for keyword in node.keywords:
        if keyword.arg and keyword.arg not in keywords and not varkw:
            return f"has no argument {keyword.arg!r}"
    return None


def attribute_chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def python_problems(source: str) -> list[str]:
    """What in ``source`` uses a rave name that does not exist or arguments it does not take.

    ``import rave.x`` makes ``rave.x`` usable; otherwise only rave's lazy exports are. A
    variable assigned from a rave class (``enhancer = rave.Enhancer(...)``) is checked too.
    """
    tree = ast.parse(source)
    problems, imported = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "rave":
                    if module_tree(alias.name) is None:
                        problems.append(f"import {alias.name}: no such module")
                    imported.update(".".join(parts[:n]) for n in range(2, len(parts) + 1))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rave":
            for alias in node.names:
                if find_in_module(node.module, alias.name) is None:
                    problems.append(f"from {node.module} import {alias.name}: no such name")
    bound: dict[str, ast.ClassDef] = {}

    def resolve(parts: list[str]):
        if parts[0] in bound:
            found = bound[parts[0]]
            for part in parts[1:]:
                found = find_in_class(found, part) if isinstance(found, ast.ClassDef) else None
                if found is None:
                    problems.append(f"{'.'.join(parts)}: {part!r} is not an attribute")
                    return None
            return found
        if len(parts) > 1 and f"rave.{parts[1]}" in imported:
            pass  # a submodule the snippet imports itself
        elif len(parts) > 1 and parts[1] not in lazy_exports():
            problems.append(
                f"{'.'.join(parts)}: `import rave` alone gives no rave.{parts[1]}"
                f" (say `import rave.{parts[1]}`)"
            )
            return None
        found, failed = resolve_chain(parts, frozenset(imported))
        if found is None:
            problems.append(f"{'.'.join(parts)}: {failed} does not exist")
        return found

    for statement in tree.body:
        # only whole chains: rave.a.b is checked once, not also as rave.a
        seen = {id(node.value) for node in ast.walk(statement) if isinstance(node, ast.Attribute)}
        for node in ast.walk(statement):
            if isinstance(node, ast.Call):
                parts = attribute_chain(node.func)
                if parts and (parts[0] == "rave" or parts[0] in bound) and len(parts) > 1:
                    seen.add(id(node.func))
                    found = resolve(parts)
                    problem = signature_problem(found, node) if found is not None else None
                    if problem:
                        problems.append(f"{ast.unparse(node)}: {'.'.join(parts)} {problem}")
        for node in ast.walk(statement):
            if isinstance(node, ast.Attribute) and id(node) not in seen:
                parts = attribute_chain(node)
                is_outer = parts and (parts[0] == "rave" or parts[0] in bound)
                if is_outer and not isinstance(node.ctx, ast.Store):
                    resolve(parts)  # type: ignore[arg-type]
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Call):
            parts = attribute_chain(statement.value.func)
            if parts and parts[0] == "rave":
                made, _ = resolve_chain(parts, frozenset(imported))
                for target in statement.targets:
                    if isinstance(target, ast.Name) and isinstance(made, ast.ClassDef):
                        bound[target.id] = made
    return sorted(set(problems))


def test_every_name_the_readme_python_uses_exists_with_its_arguments():
    # every `rave.X.Y`, every method of an object the example made (enhancer = rave.Enhancer
    # (...); enhancer.light_map), every keyword argument it passes
    problems = []
    for body in python_blocks():
        problems += python_problems(body)
    assert not problems, "README's Python example uses what does not exist:\n" + "\n".join(problems)


def test_every_rave_name_in_the_readme_prose_exists():
    # inline `rave.x.y(...)`: exists, and if rave.x is not loaded by `import rave`, the
    # README says `import rave.x` somewhere
    text = flat_readme()
    said = {f"rave.{m}" for m in re.findall(r"`import rave\.(\w+)", text)}
    wrong, checked = [], 0
    for span in inline_spans(readme_text()):
        match = re.match(r"rave(?:\.\w+)+(\(.*\))?", span)
        if not match:
            continue
        checked += 1
        source = "".join(f"import {name}\n" for name in sorted(said)) + span.replace("...", "x")
        try:
            problems = python_problems(source)
        except SyntaxError:
            problems = python_problems(
                "\n".join(sorted(f"import {n}" for n in said))
                + "\n"
                + re.match(r"rave(?:\.\w+)+", span).group(0)
            )
        wrong += [f"`{span}`: {problem}" for problem in problems]
    assert checked >= 5, "the README's inline rave names are no longer found"
    assert not wrong, "\n".join(wrong)


# --- files ----------------------------------------------------------------------------


def named_paths(text: str) -> list[str]:
    candidates = inline_spans(text)
    candidates += re.findall(r"\]\(([^)#\s]+)\)", text)  # markdown links and images
    candidates += re.findall(r'src="([^"]+)"', text)  # <img src=...>
    paths = set()
    for candidate in candidates:
        for word in candidate.replace("(", " ").replace(")", " ").split():
            word = word.rstrip(".,;:")
            if word.startswith(TRACKED_TOPS) and not word.startswith("http"):
                paths.add(word)
    return sorted(paths)


def path_exists(path: str) -> bool:
    """A file, folder or glob of the repository; ``FILE::test_name`` needs that test in FILE."""
    file, _, test = path.partition("::")
    found = list(ROOT.glob(file.rstrip("/")))
    if not test or not found:
        return bool(found)
    return f"def {test.split('[')[0]}(" in found[0].read_text(encoding="utf-8")


def test_every_repository_path_the_readme_names_exists():
    paths = named_paths(readme_text())
    assert len(paths) >= 10, paths
    missing = [path for path in paths if not path_exists(path)]
    assert not missing, "README names files that are not in the repository:\n" + "\n".join(missing)


def test_every_config_and_script_the_readme_runs_exists():
    missing = []
    for command, number in shell_lines(readme_text()):
        for word in shlex.split(command):
            if word.startswith(TRACKED_TOPS) and not (ROOT / word).exists():
                missing.append(f"README.md:{number}: {word}")
    assert not missing, "\n".join(missing)


def test_the_layout_section_lists_real_folders_and_files():
    (layout,) = [body for language, body, _ in fenced_blocks(readme_text()) if "src/rave/" in body]
    parent, missing, listed = None, [], 0
    for line in layout.splitlines():
        if line and not line.startswith(" "):
            parent = ROOT / line.strip()
            assert parent.is_dir(), f"Layout: {line.strip()} is not a folder"
            continue
        match = re.match(r"  (\S+)\s{2,}", line)
        if match and parent is not None:
            listed += 1
            if not (parent / match.group(1)).exists():
                missing.append(str((parent / match.group(1)).relative_to(ROOT)))
    assert listed >= 10, "the Layout section is no longer read"
    assert not missing, "README's Layout lists what does not exist: " + ", ".join(missing)


# --- set-up ---------------------------------------------------------------------------


def setup_section() -> str:
    text = readme_text()
    match = re.search(r"^## Set-up: (\w+) commands\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README lost its '## Set-up: N commands' section"
    return match.group(0)


def makefile_targets() -> dict[str, str]:
    """target -> its recipe, from the Makefile."""
    targets, current = {}, None
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([\w.-]+):(?!=)", line)
        if match:
            current = match.group(1)
            targets[current] = ""
        elif line.startswith("\t") and current is not None:
            targets[current] += line.strip() + "\n"
        elif line.strip() and not line.startswith("#"):
            current = None
    return targets


def test_setup_is_exactly_two_make_commands_the_makefile_has():
    section = setup_section()
    assert section.startswith("## Set-up: two commands"), section.splitlines()[0]
    (first_block,) = re.findall(r"```bash\n(.*?)```", section.split("###")[0], re.S)
    commands = [shlex.split(line, comments=True) for line in first_block.splitlines()]
    commands = [words for words in commands if words]
    assert [words[:1] for words in commands] == [["make"], ["make"]], commands
    assert [words[1] for words in commands] == ["demo", "test"], commands
    targets = makefile_targets()
    for _, target in commands:
        assert target in targets, f"make {target}: the Makefile has no such target"


def test_setup_claims_about_the_makefile_hold():
    section = re.sub(r"\s+", " ", setup_section())
    targets = makefile_targets()
    written = re.search(r"`make demo` writes `([^`]+)`", section)
    assert written, "README no longer says what make demo writes"
    assert written.group(1) in targets["demo"], (written.group(1), targets["demo"])
    assert "make test-fast" in section and "test-fast" in targets
    skip = re.search(r"`make test-fast` skips .*?\(`pytest ([^`]+)`\)", section)
    assert skip and skip.group(1) in targets["test-fast"], (skip, targets["test-fast"])
    for tool in ("ruff", "pyright"):
        assert tool in section and tool in targets["test"], tool


# --- models ---------------------------------------------------------------------------


def registry_model_names() -> set[str]:
    """Names of the model registry, read from its source (``_released("name", ...)`` and
    ``DEFAULT_MODEL``) so that this test needs no torch."""
    tree = module_tree("rave.zoo.registry")
    assert tree is not None
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "_released"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "DEFAULT_MODEL" for target in node.targets
        ):
            names.add(ast.literal_eval(node.value))
    assert len(names) >= 2, "the registry's names are no longer found"
    return names


def test_the_models_table_lists_exactly_the_registry():
    section = re.search(r"^## Models\n(.*?)(?=^## )", readme_text(), re.S | re.M)
    assert section, "README lost its '## Models' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("| `")]
    listed = {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert listed == registry_model_names(), (
        f"README's Models table lists {sorted(listed)}, `rave models` has"
        f" {sorted(registry_model_names())}"
    )
