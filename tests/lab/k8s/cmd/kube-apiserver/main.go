// Command kube-apiserver is the upstream Kubernetes API server, built from the
// published k8s.io/kubernetes module for Herald's local lab. It mirrors
// k8s.io/kubernetes/cmd/kube-apiserver/apiserver.go.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zone support, as upstream.

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format.
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics.
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric.
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	os.Exit(cli.Run(command))
}
