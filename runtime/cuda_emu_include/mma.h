// mma.h for the CUDA emulator: everything it declares that cnncc uses lives in cuda_emu.h,
// which the emulator build includes before the generated source.
#pragma once
#include "cuda_emu.h"
