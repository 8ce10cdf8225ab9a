//go:build tools

// Package tfprovider pins the provider for `go mod tidy`; the binary is built with
// `go build -o ... github.com/dmacvicar/terraform-provider-libvirt`.
package tfprovider

import _ "github.com/dmacvicar/terraform-provider-libvirt"
