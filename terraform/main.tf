# The devbox VM: the bootc disk as a read-only base volume, a copy-on-write root volume per
# VM, a cloud-init disk (hostname, user, project SSH key, growpart, sudo), and the domain.
provider "libvirt" {
  uri = var.libvirt_uri
}

locals {
  key = substr(var.disk_key, 0, 16)
}

# The provider never hashes a source file's content: the disk key in the name is what makes
# a new disk a new volume (and so a new VM).
resource "libvirt_volume" "base" {
  name   = "devbox-${var.name}-base-${local.key}.qcow2"
  pool   = var.pool
  source = var.disk_path
  format = "qcow2"
}

resource "libvirt_volume" "root" {
  name           = "devbox-${var.name}-root-${local.key}.qcow2"
  pool           = var.pool
  base_volume_id = libvirt_volume.base.id
  size           = var.disk_size_bytes
  format         = "qcow2"
}

resource "libvirt_cloudinit_disk" "init" {
  name = "devbox-${var.name}-cloudinit-${local.key}.iso"
  pool = var.pool
  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    hostname       = "devbox-${var.name}"
    user           = var.user
    ssh_public_key = trimspace(var.ssh_public_key)
  })
  meta_data = yamlencode({
    "instance-id"    = "devbox-${var.name}-${local.key}"
    "local-hostname" = "devbox-${var.name}"
  })
}

resource "libvirt_domain" "vm" {
  name        = "devbox-${var.name}"
  description = "devbox:${var.repo}"
  type        = var.domain_type
  memory      = var.memory_mib
  vcpu        = var.vcpus
  qemu_agent  = var.qemu_agent
  cloudinit   = libvirt_cloudinit_disk.init.id

  dynamic "cpu" {
    for_each = var.cpu_mode == "" ? [] : [var.cpu_mode]
    content {
      mode = cpu.value
    }
  }

  disk {
    volume_id = libvirt_volume.root.id
  }

  network_interface {
    network_name   = var.network
    wait_for_lease = var.wait_for_lease
  }

  # [vm] egress: a new VM is born with devbox's network filter on its interface (devbox puts
  # it on, or takes it off, a running VM in place: a change here never replaces the VM)
  dynamic "xml" {
    for_each = var.network_filter == "" ? [] : [var.network_filter]
    content {
      xslt = templatefile("${path.module}/filter.xsl.tftpl", { filter = xml.value })
    }
  }

  console {
    type        = "pty"
    target_type = "serial"
    target_port = "0"
  }

  # 0.8.3 updates a domain's disks in place and leaves the running guest on the deleted
  # volume: a new root volume (a new disk) must make a new VM.
  lifecycle {
    replace_triggered_by = [libvirt_volume.root.id]
    ignore_changes       = [xml]
  }
}
