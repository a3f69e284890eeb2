package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vgg16/vgg16/internal/cpu"
	"github.com/vgg16/vgg16/internal/device"
)

func doctorCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Show the GPU, CUDA libraries and CPU BLAS this machine offers",
		Long: `Show what vgg16 finds at run time: the NVIDIA driver and its CUDA version, each GPU
(name, memory, compute capability), cuBLAS, cuDNN and NVRTC (version and the file each was
loaded from), and the CPU's SGEMM library. It says why --device auto would fall back to the CPU.`,
		Example: "  vgg16 doctor",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			report, ok, why := device.GPUReport()
			fmt.Fprint(w, report)
			if ok {
				fmt.Fprintln(w, "GPU: usable (--device auto picks it)")
			} else {
				fmt.Fprintf(w, "GPU: not usable: %s\n", why)
			}
			fmt.Fprintf(w, "CPU: %s\n", cpu.New().Name())
			return nil
		},
	}
}
