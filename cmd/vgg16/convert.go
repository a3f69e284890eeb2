package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vgg16/vgg16/internal/checkpoint"
)

func convertCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "convert IN.pth OUT.safetensors",
		Short: "Convert PyTorch weights (.pth) to safetensors",
		Long: `Convert a PyTorch state dict — torchvision's vgg16-*.pth / vgg16_bn-*.pth or any
file written by torch.save(model.state_dict()) — to a safetensors file with the same
tensor names. The .pth file is read as data (its pickle is interpreted with an
allow-list, never executed). Floating-point tensors are written as float32, integer
ones as int64.

Only this direction: writing .pth (a Python pickle) is not supported. PyTorch reads
the result with safetensors.torch.load_file, and vgg16 reads either format wherever
it takes weights (--pretrained, --init, eval, predict). An existing OUT is kept
unless --force is given.`,
		Example: `  vgg16 convert vgg16_bn-6c64b313.pth vgg16_bn.safetensors`,
		Args:    exactArgs("IN.pth", "OUT.safetensors"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := os.Stat(args[1]); err == nil && !force {
				return fmt.Errorf("%s exists: give another name, or --force to replace it", args[1])
			}
			if dir := filepath.Dir(args[1]); !isDir(dir) {
				return fmt.Errorf("%s: the folder %s does not exist", args[1], dir)
			}
			n, err := checkpoint.ConvertPTH(args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %d tensors to %s\n", n, args[1])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace OUT if it exists")
	return cmd
}
