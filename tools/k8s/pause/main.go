// pause: the sandbox ("pause") container of the real node's pods. It holds the pod's namespaces and
// waits for SIGTERM or SIGINT, like registry.k8s.io/pause, which cannot be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}
