#!/usr/bin/env bash
# Build the worker image (make image) without the build touching PyPI or npm:
#  1. the host fetches the worker's wheels (pinned by constraints.txt; its own wheel kept
#     apart from its dependencies') and the Claude CLI package (pinned by
#     worker/claude-cli.lock, sha256 checked) into build/image-context;
#  2. docker build from the local debian:bookworm base (scripts/base-image.sh);
#  3. tag <version>, <version>-<revision> and latest, and write a compressed `docker save`
#     archive named after the image ID, for registry-less delivery by Ansible.
# An unchanged tree rebuilds from cache and reuses the archive; one whose recipe (every input
# of the image: worker/, the Python metadata and pins, the base image, version and revision)
# was already built and saved here skips even that: `make test` asks for the image from
# several stages, and each ask after the first costs a second, not a `pip wheel` and a
# `docker build`. BUILD_NO_CACHE=1 forces a cold build (the benchmark uses it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf 'build-image: %s\n' "$*" >&2; }

image=${FONDATION_IMAGE:-fondation-worker}
python=${PYTHON:-$root/.venv/bin/python}
context=build/image-context
archives=build/images
# shellcheck source=../worker/claude-cli.lock
. worker/claude-cli.lock
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

bash scripts/docker-engine.sh
bash scripts/base-image.sh bookworm
mkdir -p "$context/wheels" "$archives"

# The recipe: a hash of every input of the image. Built and saved before (build/images/
# recipe-<hash> names the image ID and its archive): tag that image again (another checkout
# on this engine may have moved the tags) and stop here.
recipe=$( { find worker -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
              | xargs -0 sha256sum
            sha256sum pyproject.toml constraints.txt README.md
            docker image inspect --format '{{.Id}}' debian:bookworm
            echo "$image $version $revision" ; } | sha256sum | cut -c1-16)
recipe_file=$archives/recipe-$recipe
if [ "${BUILD_NO_CACHE:-0}" != 1 ] && [ -f "$recipe_file" ]; then
  read -r id archive <"$recipe_file"
  if [ -f "$archive" ] && [ -f "$archive.index.json" ] && docker image inspect "$id" >/dev/null 2>&1; then
    for tag in "$version" "$version-$revision" latest; do docker tag "$id" "$image:$tag"; done
    ln -sfn "$(basename "$archive")" "$archives/$image-latest.tar.gz"
    short=${id#sha256:}
    log "unchanged: $image:$version-$revision id ${short:0:12} (recipe $recipe built and saved before)"
    echo "$archive"
    exit 0
  fi
fi

# 1a. Claude CLI: fetched once per version, its sha256 checked every time.
tgz=$(bash scripts/claude-cli.sh tarball)
# A hard link keeps the 180 MB file out of a second copy; cmp keeps the context stable.
cmp -s "$tgz" "$context/claude-cli.tgz" 2>/dev/null || ln -f "$tgz" "$context/claude-cli.tgz" \
  || cp "$tgz" "$context/claude-cli.tgz"

# 1b. Wheels: the worker and its pinned runtime dependencies.
rm -rf "$context/wheels.new"
timeout 900 "$python" -m pip wheel -q --disable-pip-version-check -c constraints.txt \
  --wheel-dir "$context/wheels.new" "$root" 2>&1 | grep -v '^WARNING: Location' >&2 || true
ls "$context/wheels.new"/fondation_worker-*.whl >/dev/null
# The worker's own wheel goes apart from its dependencies': the image installs the
# dependencies first, so a worker-only change keeps their layers (same diff IDs).
rm -rf "$context/worker-wheel.new"; mkdir -p "$context/worker-wheel.new"
mv "$context/wheels.new"/fondation_worker-*.whl "$context/worker-wheel.new/"
# Only replace a wheel dir when its content changed, so the build cache stays warm.
for dir in wheels worker-wheel; do
  if ! diff -rq "$context/$dir.new" "$context/$dir" >/dev/null 2>&1; then
    rm -rf "${context:?}/$dir"; mv "$context/$dir.new" "$context/$dir"
  else
    rm -rf "${context:?}/$dir.new"
  fi
done
cp -p worker/Dockerfile "$context/Dockerfile"
rm -rf "$context/image"; cp -rp worker/image "$context/image"

# 2. Build.
log "building $image:$version ($revision)"
build_log=$(mktemp)
no_cache=()
[ "${BUILD_NO_CACHE:-0}" = 1 ] && no_cache=(--no-cache)  # bench/image.py measures a cold build
if ! timeout 1800 docker build "${no_cache[@]}" -f "$context/Dockerfile" \
     --build-arg BASE=debian:bookworm \
     --build-arg "CLAUDE_CLI_VERSION=$CLAUDE_CLI_VERSION" \
     --build-arg "CLAUDE_CLI_SHA256=$CLAUDE_CLI_SHA256" \
     --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
     -t "$image:$version" -t "$image:$version-$revision" -t "$image:latest" \
     "$context" >"$build_log" 2>&1; then
  tail -n 40 "$build_log" >&2; rm -f "$build_log"; exit 1
fi
cached=$(grep -c 'Using cache' "$build_log" || true)
steps=$(grep -c '^Step ' "$build_log" || true)
rm -f "$build_log"
id=$(docker image inspect --format '{{.Id}}' "$image:$version")
short=${id#sha256:}; short=${short:0:12}
log "built $image:$version-$revision id $short ($cached of $steps steps from cache)"

# 3. Archive for registry-less transfer; the name carries the image ID.
archive="$archives/$image-$version-$short.tar.gz"
if [ ! -f "$archive" ]; then
  docker save "$image:$version" "$image:$version-$revision" | gzip -1 >"$archive.tmp"
  mv "$archive.tmp" "$archive"
  log "archive $archive ($(du -h "$archive" | cut -f1))"
else
  log "archive $archive already present"
fi
# The layer index the role reads to ship only the layers a host lacks (written once).
if [ ! -f "$archive.index.json" ]; then
  timeout 600 "$python" roles/fondation_worker/files/slim_image_archive.py --archive "$archive" --index-only
fi
ln -sfn "$(basename "$archive")" "$archives/$image-latest.tar.gz"
echo "$id $archive" >"$recipe_file"
echo "$archive"
