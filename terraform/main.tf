# VM infrastructure (terraform + libvirt provider). Filled in by the VM-mode work; kept
# as a valid, empty module so `terraform fmt -check` and `terraform validate` run today.
terraform {
  required_version = ">= 1.5"
}
