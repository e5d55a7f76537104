"""The library: pixels (functional, kernels), 2x3 matrices (geometry), transforms that
draw parameters, a sample's warp planned before its pixels, targets that move with it."""
