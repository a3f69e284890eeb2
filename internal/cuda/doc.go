//go:build linux && cgo

// Package cuda binds the parts of the CUDA driver API, cuBLAS, cuDNN 9 and
// NVRTC that the project uses. Nothing is linked at build time: the
// libraries are opened with dlopen when Load (or Probe) first runs and every
// function is looked up with dlsym, so the same binary builds and runs on a
// machine without CUDA and uses the GPU where one is installed.
//
// The C prototypes are declared in this package, copied from the headers of
// CUDA 12.6 / 13.0 (cuda.h, cublas_api.h, nvrtc.h) and cuDNN 9 (cudnn_graph.h,
// cudnn_ops.h, cudnn_cnn.h); each file names the header it follows. Every
// status a library returns is checked and turned into an *Error that names
// the call and carries the library's own name for the code, e.g.
// "cudnnConvolutionForward: CUDNN_STATUS_BAD_PARAM".
//
// Handles and device addresses cross the cgo boundary as integers
// (uintptr / uint64), never as Go pointers, so no Go memory is ever
// retained by C.
//
// Libraries are searched in the directories of $VGG16_CUDA_PATH
// (colon-separated) first, then by the dynamic loader's usual rules:
//
//	driver   libcuda.so.1
//	cuBLAS   libcublas.so.13, libcublas.so.12
//	cuDNN    libcudnn.so.9 (symbols missing from it: libcudnn_ops.so.9, libcudnn_cnn.so.9)
//	NVRTC    libnvrtc.so.13, libnvrtc.so.12
package cuda
