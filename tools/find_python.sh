#!/usr/bin/env sh
# Prints the path of a Python >= 3.12 for the project's virtual environment (JAX 0.12 needs
# 3.12+; 3.13 preferred): PYTHON if set, then PATH, then the usual pyenv locations.
# Exits 1 with one line saying how to get one when there is none.
ok() { "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; }
for candidate in ${PYTHON:-} python3.13 python3.12 python3; do
  path=$(command -v "$candidate" 2>/dev/null) && ok "$path" && { echo "$path"; exit 0; }
done
roots="${PYENV_ROOT:-} $HOME/.pyenv /root/.pyenv /usr/local/pyenv /opt/pyenv"
command -v pyenv >/dev/null 2>&1 && roots="$(pyenv root) $roots"
for root in $roots; do
  for path in "$root"/versions/3.13*/bin/python3.13 "$root"/versions/3.12*/bin/python3.12; do
    [ -x "$path" ] && ok "$path" && { echo "$path"; exit 0; }
  done
done
echo "robustwidth needs Python >= 3.12 (for JAX 0.12) and found none on PATH or under pyenv: install one (e.g. 'pyenv install 3.13', or your system's python3.13 package) or set PYTHON=/path/to/python3.13." >&2
exit 1
