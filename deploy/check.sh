#!/usr/bin/env bash
# Checks deploy/ without a container engine or a cluster (called by .ci/run):
#  1. the Dockerfile's build stage: its COPY and RUN lines up to `cargo fetch` run on a copy of
#     the tree, then `cargo metadata --locked` on the full sources, as the image build would;
#  2. deploy/k8s against the Kubernetes schemas (`kubernetes-validate --strict`, from PyPI in
#     a venv under target/; skipped, saying why, when PyPI cannot be reached);
#  3. the systemd unit with `systemd-analyze verify` (its binary path pointed at an existing
#     file; skipped when systemd-analyze is absent).
# Exit status 1 on the first failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------- 1. the image's build stage --
# The instructions of the first stage, continuation lines joined.
stage="$(awk '
  /^FROM / { stage++; next }
  stage == 1 && !/^[[:space:]]*#/ {
    line = line $0
    if (sub(/\\[[:space:]]*$/, "", line)) { line = line " "; next }
    print line; line = ""
  }' "$root/deploy/Dockerfile")"
build="$work/src"
mkdir -p "$build"
fetched=0
while IFS= read -r instr; do
  case "$instr" in
    WORKDIR*|"") ;;
    COPY*)
      # COPY SRC... DEST (DEST relative to WORKDIR)
      read -r -a words <<<"${instr#COPY }"
      dest="${words[-1]}"
      unset 'words[-1]'
      for src in "${words[@]}"; do
        if [[ -d "$root/$src" ]]; then
          # A directory's contents go into DEST, as Docker copies them.
          mkdir -p "$build/$dest" && cp -R "$root/$src/." "$build/$dest/"
        elif [[ "$dest" == */ ]]; then
          mkdir -p "$build/$dest" && cp "$root/$src" "$build/$dest"
        else
          mkdir -p "$(dirname "$build/$dest")" && cp "$root/$src" "$build/$dest"
        fi
      done
      ;;
    RUN*)
      cmd="${instr#RUN }"
      if [[ "$cmd" == *"cargo build"* ]]; then
        # The release build itself is the slow part; resolving the full manifest offline
        # shows that it would start.
        (cd "$build" && cargo metadata --locked --offline --format-version 1 >/dev/null) \
          || { echo "deploy/check.sh: the full sources do not resolve as the image builds them" >&2; exit 1; }
        continue
      fi
      echo "deploy/check.sh: RUN $cmd" >&2
      (cd "$build" && bash -euo pipefail -c "$cmd") \
        || { echo "deploy/check.sh: the Dockerfile's build stage fails at: RUN $cmd" >&2; exit 1; }
      [[ "$cmd" == *"cargo fetch"* ]] && fetched=1
      ;;
    *) echo "deploy/check.sh: unhandled build-stage instruction: $instr" >&2; exit 1 ;;
  esac
done <<<"$stage"
[[ $fetched == 1 ]] || { echo "deploy/check.sh: the build stage has no cargo fetch step" >&2; exit 1; }
echo "deploy/check.sh: Dockerfile build stage ok"

# The image's default command must serve the quick start outside the container.
grep -q '^CMD \["serve", "--listen", "0.0.0.0:8080"\]' "$root/deploy/Dockerfile" \
  || { echo "deploy/check.sh: the image's CMD does not listen on 0.0.0.0:8080" >&2; exit 1; }

# ----------------------------------------------------------------------- 2. Kubernetes schemas --
venv="$root/target/deploy-check-venv"
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate 2>"$work/pip.log"; then
    echo "deploy/check.sh: SKIPPED the Kubernetes schema check: kubernetes-validate could not be installed from PyPI:" >&2
    tail -n 3 "$work/pip.log" >&2
    venv=""
  fi
fi
if [[ -n "$venv" ]]; then
  manifests=()
  for f in "$root"/deploy/k8s/*.yaml; do
    [[ "$(basename "$f")" == kustomization.yaml ]] || manifests+=("$f")
  done
  "$venv/bin/kubernetes-validate" --strict "${manifests[@]}"
  echo "deploy/check.sh: deploy/k8s ok"
fi

# --------------------------------------------------------------------------- 3. systemd unit --
if command -v systemd-analyze >/dev/null 2>&1; then
  unit="$work/unit/agentgate.service"
  mkdir -p "$(dirname "$unit")"
  sed 's#/usr/local/bin/agentgate#/bin/true#g' "$root/deploy/systemd/agentgate.service" >"$unit"
  if ! out="$(systemd-analyze verify "$unit" 2>&1)" || [[ -n "$out" ]]; then
    echo "deploy/check.sh: systemd-analyze verify: $out" >&2
    exit 1
  fi
  echo "deploy/check.sh: systemd unit ok"
else
  echo "deploy/check.sh: SKIPPED the systemd unit check: systemd-analyze is not installed" >&2
fi
