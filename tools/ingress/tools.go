//go:build tools

// Package tools records the command this module builds (Traefik, the local Ingress
// controller), so that `go mod tidy` keeps its modules in go.mod and go.sum.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
