# Every variable devbox passes (core/terraform.py: VARIABLES must match this file; a test checks).

variable "libvirt_uri" {
  description = "libvirt connection (devbox.toml libvirt.uri)"
  type        = string
  default     = "qemu:///system"
}

variable "name" {
  description = "VM name suffix: the domain is devbox-<name>"
  type        = string
}

variable "repo" {
  description = "the checkout this VM belongs to (recorded in the domain's description)"
  type        = string
}

variable "disk_path" {
  description = "the qcow2 made by bootc-image-builder (.build/disk.qcow2)"
  type        = string
}

variable "disk_key" {
  description = "hash of every input of the disk: a new disk gets a new base volume name, so terraform replaces the VM"
  type        = string
}

variable "pool" {
  description = "libvirt storage pool for the volumes"
  type        = string
  default     = "default"
}

variable "network" {
  description = "libvirt network for the VM's NIC"
  type        = string
  default     = "default"
}

variable "user" {
  description = "the VM user (your login name), in group wheel"
  type        = string
}

variable "ssh_public_key" {
  description = "the project SSH key (.build/ssh/id_ed25519.pub), never your own"
  type        = string
}

variable "memory_mib" {
  description = "memory in MiB"
  type        = number
  default     = 8192
}

variable "vcpus" {
  description = "virtual CPUs"
  type        = number
  default     = 4
}

variable "disk_size_bytes" {
  description = "size of the VM's root volume (an overlay on the base disk)"
  type        = number
  default     = 64424509440
}

variable "domain_type" {
  description = "kvm (the point of VM mode); qemu (TCG) only where KVM cannot run the guest"
  type        = string
  default     = "kvm"
}

variable "cpu_mode" {
  description = "host-passthrough for nested virtualisation; empty for the hypervisor's default CPU"
  type        = string
  default     = "host-passthrough"
}

variable "wait_for_lease" {
  description = "wait until the NIC has a DHCP lease before apply returns"
  type        = bool
  default     = true
}

variable "qemu_agent" {
  description = "ask the guest agent for the VM's addresses (the bootc image runs qemu-guest-agent)"
  type        = bool
  default     = true
}

variable "network_filter" {
  description = "the libvirt network filter a new VM's interface is born with (devbox defines it: [vm] egress); empty: none"
  type        = string
  default     = ""
}
