# Pinned to the 0.8 line on purpose: 0.9.x is a rewrite whose schema mirrors libvirt XML and
# has an open report (#1344) of `cpu.mode = "host-passthrough"` being silently dropped, the
# one thing VM mode exists for. devbox checks the CPU mode of the real domain after apply.
terraform {
  required_version = ">= 1.5"
  required_providers {
    libvirt = {
      source  = "dmacvicar/libvirt"
      version = "= 0.8.3"
    }
  }
}
