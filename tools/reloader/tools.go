//go:build tools

// Package tools records the command this module builds: prometheus-config-reloader, the
// Prometheus Operator's sidecar that reloads Prometheus and Alertmanager when their mounted
// ConfigMaps and Secrets change, so that `go mod tidy` keeps its module in go.mod and go.sum.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
)
