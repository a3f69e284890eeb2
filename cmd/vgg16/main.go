// Command vgg16 trains and evaluates VGG networks on CIFAR-10, on an NVIDIA
// GPU or the CPU. The commands only parse flags and print; the work is in
// internal/.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vgg16:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "vgg16",
		Short: "Train and evaluate VGG networks on CIFAR-10",
		Long: `vgg16 trains VGG networks (VGG11/13/16/19 with batch norm, VGG11-LRN, VGG16-1,
or any torchvision-style layer list) on CIFAR-10 and evaluates them. Checkpoints
are safetensors files under torchvision's vgg16_bn key names.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(summaryCmd(), trainCmd(), evalCmd(), predictCmd(), dataCmd(), benchCmd(), doctorCmd())
	return root
}
