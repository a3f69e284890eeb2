package main

import "github.com/spf13/cobra"

// addCommands registers the commands beyond summary.
func addCommands(root *cobra.Command) {
	root.AddCommand(trainCmd(), evalCmd(), predictCmd(), dataCmd(), benchCmd())
}
