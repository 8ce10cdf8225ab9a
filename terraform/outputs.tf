# Every output devbox reads (core/terraform.py: OUTPUTS must match this file; a test checks).

output "name" {
  description = "the libvirt domain"
  value       = libvirt_domain.vm.name
}

output "ip" {
  description = "the VM's address on its network (empty until it has a lease)"
  value       = try(libvirt_domain.vm.network_interface[0].addresses[0], "")
}

output "mac" {
  description = "the NIC's MAC address (libvirt keeps a destroyed domain's lease: match by MAC)"
  value       = libvirt_domain.vm.network_interface[0].mac
}

output "disk_key" {
  description = "the disk key this VM was made from"
  value       = var.disk_key
}
