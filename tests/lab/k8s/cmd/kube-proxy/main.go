// Command kube-proxy is the upstream Kubernetes service proxy, built from the
// published k8s.io/kubernetes module for Herald's local lab. It mirrors
// k8s.io/kubernetes/cmd/kube-proxy/proxy.go.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"            // JSON log format.
	_ "k8s.io/component-base/metrics/prometheus/restclient" // client-go metrics.
	_ "k8s.io/component-base/metrics/prometheus/version"    // version metric.
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	command := app.NewProxyCommand()
	os.Exit(cli.Run(command))
}
