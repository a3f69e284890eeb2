package train

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vgg16/vgg16/internal/cifar"
	"github.com/vgg16/vgg16/internal/shell"
)

// OpenData opens the training and validation sets that df names:
// CIFAR-10 from the directory df.Dir (fetched with fetch when missing;
// nil: no download), one batch file, or the sample embedded in the binary
// ("demo", and where the download fails if df.Fallback), with df.ValSplit
// held out (or the test set) and df.Limit applied. Notes go to w. fromDir
// says the sets came from a CIFAR-10 directory (which has a test set to
// evaluate on). It leaves in df what it opened, which a checkpoint records
// for a resumed run to open again: Dir "demo" where it fell back on the
// sample, and the fraction held out of a source without a test set. seed
// draws the images held out where df.FixedSplit is not set (older runs).
func OpenData(ctx context.Context, w io.Writer, df *DataOptions, seed uint64, fetch func(ctx context.Context, dir string) error) (trainSet, valSet *cifar.Dataset, classes []string, fromDir bool, err error) {
	if df.FixedSplit {
		seed = SplitSeed
	}
	demo := df.Dir == "demo"
	st, statErr := os.Stat(df.Dir)
	_, lstatErr := os.Lstat(df.Dir) // a link to nowhere is not absent: it is the user's
	if statErr == nil && st.Mode().IsRegular() {
		trainSet, valSet, classes, err = loadFile(w, df, seed)
		return trainSet, valSet, classes, false, err
	}
	if !demo && MissingFile(df.Dir) {
		return nil, nil, nil, false, fmt.Errorf("--data %s: no such file", df.Dir)
	}
	if !demo && !cifar.Exists(df.Dir) {
		if folder, lacks := cifar.Incomplete(df.Dir); folder != "" {
			// Not downloaded over: the folder is the user's.
			return nil, nil, nil, false, fmt.Errorf("--data %s: %s holds part of CIFAR-10, %s: complete it, move it away to download the whole, or pass one batch file as --data",
				df.Dir, folder, lacks)
		}
		if err := cifar.BrokenLink(df.Dir); err != nil {
			return nil, nil, nil, false, fmt.Errorf("--data: %w: mount it, or give another --data", err)
		}
		if err := cifar.Unreadable(df.Dir); err != nil { // not downloaded over, nor taken for no data
			return nil, nil, nil, false, fmt.Errorf("--data: %w", err)
		}
		if fetch == nil {
			return nil, nil, nil, false, fmt.Errorf("--data %s: no CIFAR-10 there; run vgg16 data download --dir %s, or pass --download", df.Dir, shell.Quote(df.Dir))
		}
		fmt.Fprintf(w, "CIFAR-10 is not in %s: downloading it\n", df.Dir)
		if err := fetch(ctx, df.Dir); err != nil {
			if os.IsNotExist(lstatErr) {
				os.Remove(df.Dir) // made for the download: removed if it stayed empty
			}
			if ctx.Err() != nil || !df.Fallback {
				return nil, nil, nil, false, fmt.Errorf("downloading CIFAR-10 into %s: %w (or train on the sample embedded in the binary: --data demo)", df.Dir, err)
			}
			fmt.Fprintf(w, "\n!!! the download failed: %v\n", err)
			fmt.Fprintf(w, "!!! for real training get the data with: vgg16 data download --dir %s  (or copy cifar-10-batches-bin/ there)\n", shell.Quote(df.Dir))
			demo = true
		}
	}
	if demo {
		ds, err := cifar.Demo()
		if err != nil {
			return nil, nil, nil, false, err
		}
		fmt.Fprintf(w, "!!! training on the DEMO SAMPLE embedded in the binary: %d real CIFAR-10 images, not the full set.\n", ds.Len())
		df.Dir = "demo"
		df.Images = checkImages(w, "the demo sample", "trained", df.Images, ds)
		trainSet, valSet = ds.Split(heldOut(w, df, "the demo sample"), seed)
		trainSet, valSet, classes, err = limit(w, trainSet, valSet, df, seed, ds.Classes)
		return trainSet, valSet, classes, false, err
	}
	trainSet, err = cifar.Open(df.Dir, "train")
	if err != nil {
		return nil, nil, nil, false, err
	}
	df.Images = checkImages(w, df.Dir+"'s training set", "trained", df.Images, trainSet)
	if df.ValSplit > 0 {
		trainSet, valSet = trainSet.Split(df.ValSplit, seed)
	} else if valSet, err = cifar.Open(df.Dir, "test"); err != nil {
		return nil, nil, nil, false, err
	} else {
		df.TestImages = checkImages(w, df.Dir+"'s test set", "validated", df.TestImages, valSet)
	}
	trainSet, valSet, classes, err = limit(w, trainSet, valSet, df, seed, trainSet.Classes)
	return trainSet, valSet, classes, true, err
}

// MissingFile says whether a --data path is not there and names a batch
// file (data_batch_1.bin, test_batch, …) rather than a directory to
// download CIFAR-10 into.
func MissingFile(path string) bool {
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		return false
	}
	base := filepath.Base(path)
	switch strings.ToLower(filepath.Ext(base)) {
	case ".bin", ".gz", ".tgz", ".tar", ".pkl", ".pickle":
		return true
	}
	return strings.HasPrefix(base, "data_batch") || strings.HasPrefix(base, "test_batch")
}

// heldOut is the fraction of a source without a test set (one batch file,
// the demo sample) held out for validation: --val-split when given and
// not 0, else 0.2. It records the fraction in df as given.
func heldOut(w io.Writer, df *DataOptions, what string) float64 {
	if !df.ValSplitGiven || df.ValSplit == 0 {
		if df.ValSplitGiven {
			fmt.Fprintf(w, "note: --val-split 0 validates on the test set, which %s does not have: holding out 20%%\n", what)
		}
		df.ValSplit = 0.2
	}
	df.ValSplitGiven = true
	return df.ValSplit
}

// loadFile trains on one batch file (binary or python version), holding
// out --val-split of it (0.2 when unset) for validation.
func loadFile(w io.Writer, df *DataOptions, seed uint64) (*cifar.Dataset, *cifar.Dataset, []string, error) {
	ds, err := cifar.ReadBatchFile(df.Dir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--data: %w", err)
	}
	df.Images = checkImages(w, df.Dir, "trained", df.Images, ds)
	split := heldOut(w, df, "a single batch file")
	fmt.Fprintf(w, "training on the single file %s (%d images), %.0f%% held out for validation\n", df.Dir, ds.Len(), 100*split)
	tr, val := ds.Split(split, seed)
	return limit(w, tr, val, df, seed, ds.Classes)
}

// checkImages is the checksum of ds, the images that where names: where
// the run recorded another (a resume), it says that the run did on other
// images before (trained, or validated) what it goes on doing on these.
func checkImages(w io.Writer, where, did, recorded string, ds *cifar.Dataset) string {
	sum := ds.Checksum()
	if recorded != "" && recorded != sum {
		fmt.Fprintf(w, "note: %s holds other images than those the run %s on before (checksum %s, was %s): its accuracies before and after are of other images\n", where, did, sum, recorded)
	}
	return sum
}

// limit applies df.Limit to the training and validation sets, and checks
// that the split left images to train on.
func limit(w io.Writer, tr, val *cifar.Dataset, df *DataOptions, seed uint64, classes []string) (*cifar.Dataset, *cifar.Dataset, []string, error) {
	n := df.Limit
	if n < 0 {
		return nil, nil, nil, fmt.Errorf("--limit %d: must not be negative", n)
	}
	if len(classes) == 0 {
		classes = cifar.ClassNames
	}
	if n > 0 && n < tr.Len() {
		tr = tr.Subset(Seq(n))
	}
	if m := max(n/5, 100); n > 0 && m < val.Len() {
		val = val.Subset(Seq(m))
	}
	switch {
	case tr.Len() == 0 && df.ValSplit > 0 && val.Len() > 0:
		return nil, nil, nil, fmt.Errorf("--val-split %g holds out all %d images: none left to train on (lower it)", df.ValSplit, val.Len())
	case tr.Len() == 0:
		return nil, nil, nil, fmt.Errorf("--data %s: no training images", df.Dir)
	case df.ValSplit > 0 && val.Len() == 0:
		fmt.Fprintf(w, "note: --val-split %g of %d images holds out none: no validation, the best checkpoint is the best training accuracy's\n", df.ValSplit, tr.Len())
	}
	return tr, val, classes, nil
}

// Seq is 0, 1, …, n-1: the indices of a Subset of the first n images.
func Seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
