"""Render the parts of deploy/ that other declarations own, so they cannot drift:

- deploy/nats/nats.conf's `users: [...]` of the DUTYLINK account, from the NATS users and
  permissions declared in gateway/store/nats_auth.py (`DEPLOY_ROLES`, built from the stream and
  subject registry);
- deploy/dutylink.example.toml, every gateway setting with its default and description, from
  the settings' schema (gateway/core/settings.py, through gateway/core/settings_docs.py);
- the ConfigMaps of deploy/kubernetes/ (`nats-config`, `dutylink-gateway`), from
  deploy/nats/nats.conf and deploy/gateway.toml, which compose mounts as they are.

    python tools/render_deploy.py          # rewrite them
    python tools/render_deploy.py --check  # exit 1, naming the file, if one is stale
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from gateway.core.settings_docs import render_example
from gateway.store import nats_auth

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NATS_CONF = DEPLOY / "nats" / "nats.conf"
EXAMPLE_CONFIG = DEPLOY / "dutylink.example.toml"
# The users' list of the DUTYLINK account: from its opening line to its closing one.
USERS_START = "    users: [\n"
USERS_END = "    ]\n    # Each node's VARZ"
# Each ConfigMap's data key, the file it carries, and its manifest.
CONFIG_MAPS = (
    (DEPLOY / "kubernetes" / "nats.yaml", "nats.conf", NATS_CONF),
    (DEPLOY / "kubernetes" / "gateway.yaml", "dutylink.toml", DEPLOY / "gateway.toml"),
)
# Characters of a role's note on one comment line (the lines end near column 100).
NOTE_WIDTH = 90
# How deep a ConfigMap's `key: |` block indents its text.
CONFIG_MAP_INDENT = " " * 4


def _list(name: str, values: tuple[str, ...], indent: str) -> list[str]:
    return [f"{indent}{name}: [", *(f'{indent}  "{v}",' for v in values), f"{indent}]"]


def render_user(role: nats_auth.Role) -> list[str]:
    """One user of the account, as nats.conf writes it: the role's note as a comment, the
    password as the environment variable of its bcrypt hash, then its permissions."""
    pad = " " * 6
    subscribe = ", ".join(f'"{subject}"' for subject in role.subscribe_allow)
    return [
        f"{pad}{{",
        *(f"{pad}  # {line}" for line in textwrap.wrap(" ".join(role.note.split()), NOTE_WIDTH)),
        f"{pad}  user: {role.user}",
        f"{pad}  password: ${role.user.upper()}_PASSWORD_HASH",
        f"{pad}  permissions: {{",
        f"{pad}    publish: {{",
        *_list("allow", role.publish_allow, f"{pad}      "),
        *_list("deny", role.publish_deny, f"{pad}      "),
        f"{pad}    }}",
        f"{pad}    subscribe: {{ allow: [{subscribe}] }}",
        f"{pad}  }}",
        f"{pad}}}",
    ]


def rendered_nats_conf(text: str) -> str:
    """`text` (nats.conf) with its users' list rendered from nats_auth.DEPLOY_ROLES."""
    start = text.index(USERS_START) + len(USERS_START)
    end = text.index(USERS_END, start)
    users = [line for role in nats_auth.DEPLOY_ROLES for line in render_user(role)]
    return text[:start] + "\n".join(users) + "\n" + text[end:]


def rendered_config_map(manifest: str, key: str, carried: str) -> str:
    """`manifest` with the block of `key: |` holding `carried`, indented as the block is."""
    opening = f"  {key}: |\n"
    start = manifest.index(opening) + len(opening)
    end = manifest.index("\n---", start) + 1
    block = "".join(
        f"{CONFIG_MAP_INDENT}{line}" if line.strip() else "\n"
        for line in carried.splitlines(keepends=True)
    )
    return manifest[:start] + block + manifest[end:]


def renders() -> dict[Path, str]:
    """Every rendered file by path, as it should read."""
    files = {
        NATS_CONF: rendered_nats_conf(NATS_CONF.read_text(encoding="utf-8")),
        EXAMPLE_CONFIG: render_example(),
    }
    for manifest, key, source in CONFIG_MAPS:
        carried = files.get(source) or source.read_text(encoding="utf-8")
        files[manifest] = rendered_config_map(manifest.read_text(encoding="utf-8"), key, carried)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check they are fresh")
    arguments = parser.parse_args()
    stale = []
    for path, text in renders().items():
        if path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not arguments.check:
                path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "is stale: run python tools/render_deploy.py" if arguments.check else "rendered"
        print(f"{path.relative_to(ROOT)} {verb}", file=sys.stderr)
    return 1 if stale and arguments.check else 0


if __name__ == "__main__":
    sys.exit(main())
