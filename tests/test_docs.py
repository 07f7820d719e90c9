"""The documentation: its code runs, its error links resolve, its reference is complete.

docs/errors.md has one section per error code, in order, each with one
reproduction that raises its error; the link at the end of every error message
points at that section.

Every other fenced ``python`` block in docs/ is executed, on asyncio and trio,
in a fresh namespace (top-level ``await`` and ``async with`` are allowed), and
type-checked with mypy in strict mode. An HTML comment on the line before the
fence (invisible on the site) changes that:

- ``<!-- docs-test: typecheck -->``: only type-checked, not run (the block
  needs a server, a signal or a process of its own).
- ``<!-- docs-test: continue -->``: the block continues the page's previous
  ``python`` block, whose code runs (and is checked) first.

Modes combine: ``<!-- docs-test: continue, typecheck -->``. A ``text`` block
marked ``<!-- docs-test: output -->`` shows what the ``python`` block before it
prints: the run must print exactly that. A block made only of
``--8<-- "examples/...:section"`` lines shows part of an example: it must
resolve, and the example's own tests and lint run and check it.

A block with a ``title="path"`` is a file of the tutorial's project (a later
``title="path (continued)"`` block is its next part): the files are
type-checked together here, and run by tests/test_tutorial.py.

In ``console`` blocks, a ``$ lifespan-kit check`` or ``$ lifespan-kit graph``
line followed by output is run, and must print exactly that output (the
tutorial's commands run in its project, in tests/test_tutorial.py). The examples
in the package's docstrings are type-checked with the names they assume taken
from ``tests/docs_prelude.pyi``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import get_args

import pytest

import lifespan_kit
import lifespan_kit.cli
import lifespan_kit.errors
import lifespan_kit.fastapi
import lifespan_kit.opentelemetry
import lifespan_kit.postgres
import lifespan_kit.pytest_plugin
import lifespan_kit.redis
import lifespan_kit.replicas
import lifespan_kit.starlette
from docs.hooks import cli_reference
from lifespan_kit.errors import DOCS_URL, ErrorCode, GraphError, LifespanKitError

if sys.version_info < (3, 11):  # pragma: no cover  # the backport, on 3.10 only
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ERRORS_PAGE = DOCS / "errors.md"
TUTORIAL = DOCS / "tutorial.md"
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)
FENCE = re.compile(r"^```(\w*)$")


def _sections(text: str) -> list[tuple[str, str]]:
    """Split the page at its `## ` headings, skipping lines inside code fences."""
    sections: list[tuple[str, list[str]]] = []
    lines: list[str] = []
    in_code = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and line.startswith("## "):
            lines = []
            sections.append((line.removeprefix("## "), lines))
            continue
        lines.append(line)
    return [(heading, "\n".join(body)) for heading, body in sections]


def _first_python_block(section: str) -> str:
    """Return the source of the section's first ```python block."""
    match = re.search(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match is not None, "the section has no ```python block"
    return match.group(1)


def _errors_raised(exc: BaseException) -> list[LifespanKitError]:
    """Return `exc` and every lifespan_kit error wrapped in it."""
    errors: list[LifespanKitError] = [exc] if isinstance(exc, LifespanKitError) else []
    inner: tuple[BaseException, ...] = ()
    if isinstance(exc, GraphError):
        inner = exc.problems
    elif isinstance(exc, BaseExceptionGroup):
        inner = exc.exceptions
    for error in inner:
        errors.extend(_errors_raised(error))
    return errors


def _error_classes() -> list[type[LifespanKitError]]:
    """Return every error class that carries a code (the roots carry none)."""
    classes = [
        getattr(lifespan_kit.errors, name) for name in lifespan_kit.errors.__all__
    ]
    return [
        cls
        for cls in classes
        if isinstance(cls, type)
        and issubclass(cls, LifespanKitError)
        and hasattr(cls, "code")
    ]


HEADINGS_AND_SECTIONS = _sections(ERRORS_PAGE.read_text(encoding="utf-8"))
SECTIONS = dict(HEADINGS_AND_SECTIONS)
CLASS_BY_CODE = {cls.code: cls for cls in _error_classes()}


def test_headings_are_the_error_codes_in_order() -> None:
    """The `## ` headings of errors.md are exactly the ErrorCode values, in order."""
    headings = [heading for heading, _ in HEADINGS_AND_SECTIONS]
    assert headings == list(ERROR_CODES)


@pytest.mark.parametrize(
    "cls", [pytest.param(cls, id=cls.__name__) for cls in _error_classes()]
)
def test_every_error_class_code_has_a_section(cls: type[LifespanKitError]) -> None:
    """Each error class's code has a section in errors.md."""
    assert cls.code in SECTIONS


def test_each_code_belongs_to_exactly_one_error_class() -> None:
    """No two error classes share a code, and no code is left without a class."""
    codes = [cls.code for cls in _error_classes()]
    assert sorted(codes) == sorted(ERROR_CODES)


@pytest.mark.parametrize("code", ERROR_CODES)
def test_section_names_its_exception_class(code: ErrorCode) -> None:
    """The section for a code names the exception class that carries that code."""
    assert f"**Exception:** `{CLASS_BY_CODE[code].__name__}`" in SECTIONS[code]


@pytest.mark.parametrize("code", ERROR_CODES)
def test_section_has_a_fix(code: ErrorCode) -> None:
    """Every section gives the fix after its reproduction."""
    section = SECTIONS[code]
    assert section.index("**Fix:**") > section.index("```python")


@pytest.mark.parametrize("code", ERROR_CODES)
def test_reproduction_raises_its_error(code: ErrorCode) -> None:
    """A section's reproduction raises its error, whose message links to sections."""
    source = _first_python_block(SECTIONS[code])
    program = compile(source, f"<docs/errors.md#{code}>", "exec")
    with pytest.raises((LifespanKitError, ExceptionGroup)) as info:
        exec(program, {"__name__": f"errors_md_{code.replace('-', '_')}"})
    [error] = [e for e in _errors_raised(info.value) if e.code == code]
    links = re.findall(r"^ *docs: (\S+)$", str(error), re.MULTILINE)
    assert links
    assert {link.removeprefix(f"{DOCS_URL}#") for link in links} <= set(SECTIONS)
    # A graph with several problems lists them, each with the link to its own code.
    assert f"{DOCS_URL}#{code}" in links or isinstance(error, GraphError)


@pytest.mark.parametrize("code", ERROR_CODES)
def test_section_has_one_reproduction(code: ErrorCode) -> None:
    """Each section has exactly one python block: the one the test above runs."""
    assert SECTIONS[code].count("```python") == 1


@pytest.mark.parametrize("code", ERROR_CODES)
def test_code_is_its_own_anchor(code: ErrorCode) -> None:
    """A code is lowercase words joined by dashes, so its heading's anchor is itself."""
    assert re.fullmatch(r"[a-z]+(-[a-z]+)*", code)


def test_docs_url_is_the_errors_page_of_the_site() -> None:
    """Error messages link to errors.md as mkdocs publishes it under site_url."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    site_url = re.search(r"^site_url: (\S+)$", config, re.MULTILINE)
    assert site_url is not None
    assert "use_directory_urls" not in config  # errors.md is served as errors/
    assert site_url.group(1) + "errors/" == DOCS_URL


# --- every other code block of the docs ----------------------------------------

MARKER = re.compile(r"^<!-- docs-test: (?P<modes>[a-z, ]+) -->$")
OPENING = re.compile(
    r'^(?P<indent> *)(?P<fence>```+)(?P<lang>[\w-]*)\b(?: title="(?P<title>[^"]+)")?.*$'
)
INCLUDE = re.compile(r'^--8<-- "(?P<path>[^":]+):(?P<section>[\w-]+)"$')
SECTION_MARK = re.compile(r"--8<-- \[(?P<edge>start|end):(?P<name>[\w-]+)\]")
MODES = frozenset({"typecheck", "continue"})


@dataclass(frozen=True)
class CodeBlock:
    """A ``python`` block of a page, with the code that tests run or check."""

    page: str
    line: int
    source: str
    modes: frozenset[str]
    shows_example: bool  # only `--8<--` lines: an example's own tests cover it
    output: str | None = None  # what it prints, from the `output` block after it

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _included(path: str, section: str) -> list[str]:
    """Return the lines pymdownx.snippets includes for `section` of `path`."""
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    selected: list[str] = []
    inside = False
    for line in lines:
        mark = SECTION_MARK.search(line)
        if mark is not None and mark["name"] == section:
            inside = mark["edge"] == "start"
        elif inside:
            selected.append(line)
    assert selected, f"{path} has no section {section!r}"
    return selected


def _fenced(text: str) -> Iterator[tuple[int, str, str, list[str], str | None]]:
    """Yield (line, language, marker line, body lines, title) for each fence."""
    lines = text.splitlines()
    index = 0
    previous = ""
    while index < len(lines):
        opening = OPENING.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        closing = opening["indent"] + opening["fence"]
        end = index + 1
        while lines[end].rstrip() != closing:
            end += 1
        indent = len(opening["indent"])
        body = [line[indent:] for line in lines[index + 1 : end]]
        yield index + 1, opening["lang"], previous, body, opening["title"]
        previous = ""
        index = end + 1


def _code_blocks(page: Path) -> list[CodeBlock]:
    """Return the page's ``python`` blocks, with includes and continuations resolved."""
    blocks: list[CodeBlock] = []
    name = page.relative_to(DOCS).as_posix()
    for line, lang, previous, body, title in _fenced(page.read_text(encoding="utf-8")):
        marker = MARKER.match(previous)
        if lang == "text" and marker is not None and marker["modes"] == "output":
            assert blocks, f"{name}:{line}: an output block follows no python block"
            output = "".join(f"{text}\n" for text in body)
            blocks[-1] = dataclasses.replace(blocks[-1], output=output)
            continue
        if lang != "python" or title is not None:
            continue  # a titled block is a file of the tutorial's project
        modes = frozenset(
            m.strip() for m in (marker["modes"] if marker else "").split(",")
        ) - {""}
        assert modes <= MODES, f"{name}:{line}: unknown docs-test mode"
        source: list[str] = []
        shows_example = True
        for code in body:
            include = INCLUDE.match(code)
            if include is None:
                source.append(code)
                shows_example = shows_example and not code.strip()
            else:
                source.extend(_included(include["path"], include["section"]))
        if "continue" in modes:
            source[:0] = [blocks[-1].source]
        text = "\n".join(source) + "\n"
        blocks.append(CodeBlock(name, line, text, modes, shows_example))
    return blocks


PAGES = sorted(page for page in DOCS.rglob("*.md") if page != ERRORS_PAGE)
BLOCKS = [block for page in PAGES for block in _code_blocks(page)]
TESTED_BLOCKS = [block for block in BLOCKS if not block.shows_example]
RUN_BLOCKS = [block for block in TESTED_BLOCKS if "typecheck" not in block.modes]


@pytest.mark.parametrize(
    "block", [pytest.param(block, id=block.id) for block in RUN_BLOCKS]
)
async def test_code_block_runs(
    block: CodeBlock, anyio_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The block runs without error, in a fresh namespace, on the test's backend.

    A block shown with its output prints exactly that output.
    """
    program = compile(
        block.source,
        f"<{block.id}>",
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,  # not this module's `from __future__ import annotations`
    )
    # A module of its own, so that pydantic and typing resolve its annotations.
    module = ModuleType(f"docs_block_{abs(hash(block.id))}")
    sys.modules[module.__name__] = module
    try:
        outcome = eval(program, module.__dict__)
        if inspect.iscoroutine(outcome):  # the block awaits at top level
            await outcome
    finally:
        del sys.modules[module.__name__]
    if block.output is not None:
        assert capsys.readouterr().out == block.output


def _as_module(source: str) -> str:
    """Return `source` as a module mypy accepts: top-level awaits go in a function."""
    try:
        compile(source, "<block>", "exec")
    except SyntaxError:
        lines = source.splitlines()
        future = [line for line in lines if line.startswith("from __future__")]
        body = [f"    {line}" for line in lines if line not in future]
        return "\n".join([*future, "async def _block() -> None:", *body]) + "\n"
    return source


@dataclass(frozen=True)
class TutorialBlock:
    """A block of the tutorial: a part of one of its files, or commands to run."""

    line: int
    lang: str
    body: list[str]
    path: str | None  # the file that a titled block is part of
    continued: bool  # the block is a later part of `path`


def tutorial_blocks() -> list[TutorialBlock]:
    """Return the tutorial's blocks, in order.

    A block titled with a path starts that file; a later block titled
    ``path (continued)`` is its next part, after two blank lines.
    """
    blocks: list[TutorialBlock] = []
    started: set[str] = set()
    for line, lang, _, body, title in _fenced(TUTORIAL.read_text(encoding="utf-8")):
        if title is None:
            blocks.append(TutorialBlock(line, lang, body, None, continued=False))
            continue
        path, _, suffix = title.partition(" ")
        assert suffix in ("", "(continued)"), f"line {line}: title {title!r}"
        assert (path in started) == bool(suffix), f"line {line}: {title!r} continues?"
        started.add(path)
        blocks.append(TutorialBlock(line, lang, body, path, continued=bool(suffix)))
    return blocks


def tutorial_files() -> dict[str, str]:
    """Return the files of the tutorial's project, as its titled blocks show them."""
    parts: dict[str, list[str]] = {}
    for block in tutorial_blocks():
        if block.path is not None:
            parts.setdefault(block.path, []).append("\n".join(block.body))
    return {path: "\n\n\n".join(texts) + "\n" for path, texts in parts.items()}


def test_tutorial_files_fit_the_page() -> None:
    """The tutorial's files have lines of at most 79 characters: no side scrolling."""
    long_lines = [
        (path, line)
        for path, text in tutorial_files().items()
        for line in text.splitlines()
        if len(line) > 79
    ]
    assert long_lines == []


def test_code_blocks_type_check(tmp_path: Path) -> None:
    """Every tested block passes mypy in strict mode, as the project's code does.

    So do the tutorial's files, together, as the modules of its project.
    """
    files: dict[str, str] = {}
    for number, block in enumerate(TESTED_BLOCKS):
        path = tmp_path / f"docs_block_{number}.py"
        path.write_text(_as_module(block.source), encoding="utf-8")
        files[path.name] = block.id
    project = tmp_path / "tutorial"
    for name, text in tutorial_files().items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text, encoding="utf-8")
    command = [
        *(sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"),
        *("--cache-dir", str(ROOT / ".mypy_cache" / "docs")),
        *("--disable-error-code", "top-level-await"),
        *sorted(str(tmp_path / name) for name in files),
        *sorted(str(path) for path in project.rglob("*.py")),
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report = re.sub(
        r"\S*(docs_block_\d+\.py)", lambda m: files[m.group(1)], result.stdout
    )
    assert result.returncode == 0, report


@pytest.mark.parametrize(
    "block",
    [pytest.param(block, id=block.id) for block in BLOCKS if block.shows_example],
)
def test_example_excerpt_resolves(block: CodeBlock) -> None:
    """A block that shows part of an example includes code, not an empty section."""
    assert block.source.strip()


def test_every_page_has_tested_code() -> None:
    """The collector finds blocks of each kind, so a parsing slip cannot hide them."""
    kinds = {mode for block in BLOCKS for mode in block.modes}
    assert kinds == MODES
    assert any(block.shows_example for block in BLOCKS)
    assert any(block.output for block in RUN_BLOCKS)


COMPARISON = (DOCS / "comparison.md").read_text(encoding="utf-8")


def test_comparison_includes_the_benchmark_results() -> None:
    """The comparison page shows bench/RESULTS.md itself, never copied figures."""
    assert '--8<-- "bench/RESULTS.md' in COMPARISON


def _comparison_tables() -> list[list[list[str]]]:
    """Return the rows of each table of the comparison page, header first."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in COMPARISON.splitlines():
        if line.startswith("|") and not previous.startswith("|"):
            tables.append([])
        if line.startswith("|") and not line.startswith("|---"):
            tables[-1].append([cell.strip() for cell in line.strip("|").split(" | ")])
        previous = line
    return tables


def test_comparison_cells_name_their_source() -> None:
    """Each cell about another library cites its docs [n] or the benchmarks [B]."""
    tables = _comparison_tables()
    cited = re.compile(r"\[\d\]|\\\[B\\\]")
    rows = [row for table in tables for row in table[1:]]
    peers = [row for row in rows if row[0] != "lifespan_kit"]
    assert len(peers) == 7 * len(tables)
    unsourced = [
        (row[0], cell)
        for row in peers
        for cell in row[1:]
        if not cell.startswith("—") and not cited.search(cell)
    ]
    assert unsourced == []


def test_comparison_fits_a_laptop_screen() -> None:
    """Tables stay narrow, and the benchmark output has the page's width to use."""
    assert max(len(table[0]) for table in _comparison_tables()) <= 5
    assert COMPARISON.startswith("---\n")
    assert "hide:\n  - toc\n" in COMPARISON
    assert '<div class="benchmark-results" markdown>' in COMPARISON
    stylesheet = (DOCS / "stylesheets" / "extra.css").read_text(encoding="utf-8")
    assert ".benchmark-results pre > code {\n  white-space: pre-wrap;" in stylesheet


# --- the API reference ----------------------------------------------------------

PUBLIC_MODULES = (
    lifespan_kit,
    lifespan_kit.errors,
    lifespan_kit.starlette,
    lifespan_kit.fastapi,
    lifespan_kit.cli,
    lifespan_kit.pytest_plugin,
    lifespan_kit.opentelemetry,
    lifespan_kit.replicas,
    lifespan_kit.postgres,
    lifespan_kit.redis,
)


@functools.cache
def _definitions(module_name: str) -> dict[str, str | None]:
    """Return each top-level name of a lifespan_kit module and its docstring.

    Assigned names (type aliases, constants) take the string literal that
    follows them, as mkdocstrings reads it; imported names follow the import.
    """
    path = ROOT / (module_name.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module_name.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # The package imports its public names under `if TYPE_CHECKING:` (they are
    # loaded on first use); they are documented where they come from. Other
    # modules import under it only for annotations, sometimes each other's.
    is_package = path.name == "__init__.py"
    body = [
        statement
        for node in tree.body
        for statement in (
            node.body
            if is_package
            and isinstance(node, ast.If)
            and ast.unparse(node.test) == "TYPE_CHECKING"
            else [node]
        )
    ]
    found: dict[str, str | None] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            # Overloads come first, without docstrings; the implementation has one.
            found[node.name] = ast.get_docstring(node) or found.get(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            doc = (
                after.value.value
                if isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
                else None
            )
            found.update({t.id: doc for t in targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "lifespan_kit"
        ):
            source = _definitions(str(node.module))
            for alias in node.names:
                found[alias.asname or alias.name] = source.get(alias.name)
    return found


def _public_names(module: ModuleType) -> list[str]:
    names: list[str] = module.__all__
    return names


PUBLIC_NAMES = [
    (module.__name__, name)
    for module in PUBLIC_MODULES
    for name in _public_names(module)
]


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param(module, name, id=f"{module}.{name}")
        for module, name in PUBLIC_NAMES
    ],
)
def test_public_name_has_a_docstring_with_an_example(module: str, name: str) -> None:
    """Each public name is documented, with an example, where the reference reads it."""
    doc = _definitions(module).get(name)
    assert doc, f"{module}.{name} has no docstring"
    assert re.search(r"^\s*Examples?:$", doc, re.MULTILINE), f"{module}.{name}"


@pytest.mark.parametrize(
    "module", [pytest.param(m, id=m.__name__) for m in PUBLIC_MODULES]
)
def test_public_module_has_a_reference_page(module: ModuleType) -> None:
    """The API reference renders every public module, and every core name."""
    page = DOCS / "reference" / f"{module.__name__.replace('lifespan_kit.', '')}.md"
    text = page.read_text(encoding="utf-8")
    assert f"::: {module.__name__}\n" in text
    if module is lifespan_kit:
        listed = re.findall(r"^        - (\w+)$", text, re.MULTILINE)
        assert sorted(listed) == sorted(_public_names(module))


# --- the examples in docstrings -------------------------------------------------

PRELUDE = Path(__file__).resolve().parent / "docs_prelude.pyi"
DOCSTRING_BLOCK = re.compile(
    r"^(?P<indent> *)```python\n(?P<code>.*?)^(?P=indent)```$", re.MULTILINE | re.DOTALL
)


def _docstring_examples() -> list[tuple[str, str]]:
    """Return (where, code) for each ``python`` block of a docstring in the package."""
    examples: list[tuple[str, str]] = []
    for path in sorted((ROOT / "lifespan_kit").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [tree, *ast.walk(tree)]
        for node in nodes:
            if not isinstance(
                node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                continue
            doc = ast.get_docstring(node)
            name = getattr(node, "name", "<module>")
            examples.extend(
                (f"{path.name}:{name}", textwrap.dedent(match["code"]))
                for match in DOCSTRING_BLOCK.finditer(doc or "")
            )
    return list(dict.fromkeys(examples))  # the module is walked twice


def _prelude_names() -> set[str]:
    """Return every name docs_prelude.pyi provides."""
    body = ast.parse(PRELUDE.read_text(encoding="utf-8")).body
    defined = {
        node.name
        for node in body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    }
    annotated = {
        node.target.id
        for node in body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }
    imported = {
        alias.asname
        for node in body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
        if alias.asname is not None
    }
    return defined | annotated | imported


def _with_prelude(code: str, provided: set[str]) -> str:
    """Prefix `code` with imports of the prelude names it uses but does not bind."""
    tree = ast.parse(code)
    bound = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)
    }
    bound.update(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    )
    used = {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    needed = sorted((used - bound) & provided)
    imports = [f"from tests.docs_prelude import {name}" for name in needed]
    if "lifespan_kit" in used - bound:
        imports.append("import lifespan_kit.fastapi")
    return "\n".join([*imports, _as_module(code)])


DOCSTRING_EXAMPLES = _docstring_examples()


def test_docstring_examples_type_check(tmp_path: Path) -> None:
    """Every example in a docstring passes mypy strict, with the prelude's names."""
    provided = _prelude_names()
    files: dict[str, str] = {}
    for number, (where, code) in enumerate(DOCSTRING_EXAMPLES):
        path = tmp_path / f"docstring_example_{number}.py"
        path.write_text(_with_prelude(code, provided), encoding="utf-8")
        files[path.name] = where
    command = [
        *(sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"),
        *("--cache-dir", str(ROOT / ".mypy_cache" / "docs")),
        *("--disable-error-code", "top-level-await"),
        *sorted(str(tmp_path / name) for name in files),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False
    )
    report = re.sub(
        r"\S*(docstring_example_\d+\.py)", lambda m: files[m.group(1)], result.stdout
    )
    assert result.returncode == 0, report


# --- command lines with their output -------------------------------------------


def _cli_transcripts() -> list[tuple[str, list[str], str]]:
    """Return (where, argv, output) for each `$ lifespan-kit check|graph` shown."""
    transcripts: list[tuple[str, list[str], str]] = []
    for page in PAGES:
        name = page.relative_to(DOCS).as_posix()
        if page == TUTORIAL:
            continue  # its commands run in its own project: tests/test_tutorial.py
        for line, lang, _, body, _ in _fenced(page.read_text(encoding="utf-8")):
            if lang != "console":
                continue
            starts = [i for i, text in enumerate(body) if text.startswith("$ ")]
            shown = [
                (start, body[start].removeprefix("$ ").split(), body[start + 1 : end])
                for start, end in itertools.pairwise([*starts, len(body)])
            ]
            transcripts.extend(
                (f"{name}:{line + start}", argv[1:], "".join(f"{t}\n" for t in output))
                for start, argv, output in shown
                if argv[:1] == ["lifespan-kit"] and argv[1:2] in (["check"], ["graph"])
            )
    return transcripts


@pytest.mark.parametrize(
    ("argv", "output"),
    [
        pytest.param(argv, output, id=where)
        for where, argv, output in _cli_transcripts()
    ],
)
def test_command_line_transcript_is_current(
    argv: list[str], output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `lifespan-kit check` or `graph` shown with its output prints that output."""
    assert lifespan_kit.cli.main(argv) == 0
    assert capsys.readouterr().out == output


# --- the site's build ------------------------------------------------------------

MKDOCS_CONFIG = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_command_line_reference_is_each_commands_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The built CLI reference shows exactly what `lifespan-kit ... --help` prints."""
    page = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    built = cli_reference.on_page_markdown(page)
    monkeypatch.setenv("COLUMNS", cli_reference.ENVIRONMENT["COLUMNS"])
    for argv in ([], ["run"], ["check"], ["graph"]):
        with pytest.raises(SystemExit):
            lifespan_kit.cli.main([*argv, "--help"])
        help_text = capsys.readouterr().out
        assert "usage: lifespan-kit" in help_text
        assert f"```text\n{help_text}```" in built, argv
    assert cli_reference.PLACEHOLDER not in built


def test_command_line_reference_hook_is_registered() -> None:
    """mkdocs runs the hook that writes the CLI reference, and does not publish it."""
    assert "hooks:\n  - docs/hooks/cli_reference.py\n" in MKDOCS_CONFIG
    assert "exclude_docs: |\n  hooks/\n" in MKDOCS_CONFIG


def test_other_pages_are_left_alone() -> None:
    """The hook changes only a page with its placeholder line."""
    page = "# Title\n\nSee `<!-- lifespan-kit --help -->` in cli.md.\n"
    assert cli_reference.on_page_markdown(page) == page


def test_strict_build_fails_on_dead_links() -> None:
    """The strict build fails on a link to a missing page or anchor, or a bad link."""
    validation = MKDOCS_CONFIG.split("\nvalidation:\n", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"^strict: true$", MKDOCS_CONFIG, re.MULTILINE)
    for key in ("not_found", "absolute_links", "unrecognized_links", "anchors"):
        assert re.search(rf"^    {key}: warn$", validation, re.MULTILINE), key


def test_docs_environment_formats_signatures() -> None:
    """The docs group installs a formatter, so the reference shows whole signatures."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    group = re.search(r"^docs = \[\n(.*?)^\]", pyproject, re.MULTILINE | re.DOTALL)
    assert group is not None
    names = set(re.findall(r'^    "([\w-]+)', group.group(1), re.MULTILINE))
    assert {"mkdocstrings", "mkdocs-material"} <= names
    assert names & {"ruff", "black"}


@pytest.mark.parametrize("path", ["CHANGELOG.md", "README.md"])
def test_links_outside_the_site_are_absolute(path: str) -> None:
    """The changelog and the README are read off the site too: no relative links."""
    text = (ROOT / path).read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    assert [t for t in targets if not t.startswith("https://")] == []
