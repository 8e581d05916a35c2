// The sandbox ("pause") process of the local real node's pods. No image can be pulled
// here, so tools/localenv/node.py builds this and imports it into containerd as the
// sandbox image.
module thinkus.ops/tools/pause

go 1.26.0
