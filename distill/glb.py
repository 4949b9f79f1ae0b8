"""A vertex-coloured triangle mesh as binary glTF 2.0 (GLB): POSITION, COLOR_0 and indices, nothing else.

Layout as ComfyUI's save_glb: one buffer (positions, then colours, then uint32 indices, each 4-byte aligned), one
mesh, one node, so a mesh written here lies where SaveGLB puts the same vertices."""
import json
import struct

import numpy as np

ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
FLOAT, UNSIGNED_INT = 5126, 5125
JSON_CHUNK, BIN_CHUNK = 0x4E4F534A, 0x004E4942


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB decoding (IEC 61966-2-1): c/12.92 up to 0.04045, else ((c + 0.055)/1.055)^2.4; glTF's COLOR_0 is
    linear and the scene's albedo is what its renders show, sRGB-encoded."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def pad(data: bytes, fill: bytes = b"\0") -> bytes:
    return data + fill * (-len(data) % 4)


def glb_bytes(vertices: np.ndarray, colours: np.ndarray, faces: np.ndarray) -> bytes:
    """GLB of vertices [N, 3], their sRGB colours [N, 3] in 0..1 (written linear, float32 RGB) and triangles
    [M, 3] (vertex indices)."""
    if len(vertices) == 0 or len(faces) == 0 or colours.shape != vertices.shape:
        raise ValueError(f"a coloured mesh needs vertices, one RGB colour per vertex and triangles; got "
                         f"{len(vertices)} vertices, colours {tuple(colours.shape)}, {len(faces)} triangles.")
    positions = np.ascontiguousarray(vertices, dtype=np.float32)
    linear = np.ascontiguousarray(srgb_to_linear(np.clip(colours, 0, 1)), dtype=np.float32)
    indices = np.ascontiguousarray(faces, dtype=np.uint32)
    views, blob = [], b""
    for array, target in ((positions, ARRAY_BUFFER), (linear, ARRAY_BUFFER), (indices, ELEMENT_ARRAY_BUFFER)):
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": array.nbytes, "target": target})
        blob += pad(array.tobytes())
    gltf = {
        "asset": {"version": "2.0", "generator": "ComfyUI score distillation"},
        "buffers": [{"byteLength": len(blob)}],
        "bufferViews": views,
        "accessors": [
            {"bufferView": 0, "componentType": FLOAT, "count": len(positions), "type": "VEC3",
             "min": positions.min(0).tolist(), "max": positions.max(0).tolist()},
            {"bufferView": 1, "componentType": FLOAT, "count": len(linear), "type": "VEC3"},
            {"bufferView": 2, "componentType": UNSIGNED_INT, "count": indices.size, "type": "SCALAR"},
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "COLOR_0": 1}, "indices": 2, "mode": 4}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }
    text = pad(json.dumps(gltf).encode(), b" ")
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text + struct.pack("<II", len(blob), BIN_CHUNK) + blob
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks
