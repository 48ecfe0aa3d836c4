"""Checks that terraform/ holds together, as `terraform validate` would on the points
that checkov does not look at: every var.X, local.X, module.M.OUT, resource and
data reference names something declared in its module; every module call passes
only variables the module declares and all it requires; every file() and
templatefile() names a file that exists, and a template's ${...} are exactly the
variables it is given. Run by ops/check-terraform; prints each problem and exits 1.
"""

import pathlib
import re
import sys

import hcl2

# The parser adds __start_line__ and __end_line__ to every block.
META = {"source", "providers", "depends_on", "count", "for_each", "version", "__start_line__", "__end_line__"}


def source(body):
    """A module call's source (the parser may give attributes as one-item lists)."""
    value = body["source"]
    return value[0] if isinstance(value, list) else value


def strip_comments(text):
    """Drops # and // comments outside strings."""
    out = []
    for line in text.splitlines():
        quoted, kept = False, []
        i = 0
        while i < len(line):
            c = line[i]
            if c == '"' and (i == 0 or line[i - 1] != "\\"):
                quoted = not quoted
            if not quoted and (c == "#" or line.startswith("//", i)):
                break
            kept.append(c)
            i += 1
        out.append("".join(kept))
    return "\n".join(out)


class Module:
    def __init__(self, path):
        self.path = path
        self.text = ""
        self.variables, self.outputs, self.locals = {}, set(), set()
        self.resources, self.data, self.calls = set(), set(), {}
        for tf in sorted(path.glob("*.tf")):
            raw = tf.read_text()
            self.text += strip_comments(raw) + "\n"
            with tf.open() as f:
                doc = hcl2.load(f)
            for block in doc.get("variable", []):
                for name, body in block.items():
                    self.variables[name] = "default" in body
            for block in doc.get("output", []):
                self.outputs.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)
            for block in doc.get("resource", []):
                for kind, named in block.items():
                    self.resources.update((kind, n) for n in named)
            for block in doc.get("data", []):
                for kind, named in block.items():
                    self.data.update((kind, n) for n in named)
            for block in doc.get("module", []):
                self.calls.update(block)


def check(root):
    problems = []
    modules = {p: Module(p) for p in [root] + sorted((root / "modules").glob("*/"))}
    for path, m in modules.items():
        where = path.relative_to(root.parent)
        say = lambda msg: problems.append(f"{where}: {msg}")
        for name in set(re.findall(r"\bvar\.(\w+)", m.text)) - set(m.variables):
            say(f"var.{name} is not declared")
        for name in set(re.findall(r"\blocal\.(\w+)", m.text)) - m.locals:
            say(f"local.{name} is not declared")
        for kind, name in set(re.findall(r"\bdata\.(\w+)\.(\w+)", m.text)) - m.data:
            say(f"data.{kind}.{name} is not declared")
        used = set(re.findall(r"(?<![.\w])(aws_\w+)\.(\w+)", m.text))
        for kind, name in used - m.resources:
            say(f"{kind}.{name} is not declared")
        for name, out in set(re.findall(r"\bmodule\.(\w+)\.(\w+)", m.text)):
            if name not in m.calls:
                say(f"module.{name} is not called")
                continue
            target = modules.get((path / source(m.calls[name])).resolve())
            if target and out not in target.outputs:
                say(f"module.{name} has no output {out}")
        for name, body in m.calls.items():
            target = modules.get((path / source(body)).resolve())
            if target is None:
                say(f"module {name}: no module at {source(body)}")
                continue
            args = set(body) - META
            for a in sorted(args - set(target.variables)):
                say(f"module {name} passes {a}, which {source(body)} does not declare")
            required = {v for v, has_default in target.variables.items() if not has_default}
            for v in sorted(required - args):
                say(f"module {name} does not pass {v}, which {source(body)} requires")
        for rel in re.findall(r'\bfile\("\$\{path\.module\}/([^"]+)"\)', m.text):
            if not (path / rel).is_file():
                say(f"file {rel} does not exist")
        for rel, keys in re.findall(
            r'templatefile\("\$\{path\.module\}/([^"]+)",\s*\{(.*?)\}\)', m.text, re.S
        ):
            given = set(re.findall(r"^\s*(\w+)\s*=", keys, re.M))
            template = path / rel
            if not template.is_file():
                say(f"template {rel} does not exist")
                continue
            wanted = set(re.findall(r"(?<!\$)\$\{(\w+)\}", template.read_text()))
            for v in sorted(wanted - given):
                say(f"template {rel} uses ${{{v}}}, which is not given")
            for v in sorted(given - wanted):
                say(f"template {rel} is given {v}, which it does not use")
    return problems


if __name__ == "__main__":
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "terraform").resolve()
    found = check(root)
    for p in found:
        print(p)
    modules = 1 + len(list((root / "modules").glob("*/")))
    print(f"terraform references: {modules} modules, {len(found)} problems")
    sys.exit(1 if found else 0)
