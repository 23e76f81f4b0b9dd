//go:build tools

// Package tools pins promtool (Prometheus' rule checker and rule unit-test runner) to the
// version in go.mod; tests/lab/build-promtool.sh builds it from the module proxy.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
