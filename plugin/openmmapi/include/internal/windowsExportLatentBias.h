#ifndef LATENTBIAS_WINDOWSEXPORT_H_
#define LATENTBIAS_WINDOWSEXPORT_H_

/*
 * Symbol visibility of the LatentBias plugin's main library (OpenMM's convention for plugins).
 */

#if defined(_MSC_VER)
    #if defined(LATENTBIAS_BUILDING_SHARED_LIBRARY)
        #define OPENMM_EXPORT_LATENTBIAS __declspec(dllexport)
    #else
        #define OPENMM_EXPORT_LATENTBIAS __declspec(dllimport)
    #endif
#else
    #define OPENMM_EXPORT_LATENTBIAS __attribute__((visibility("default")))
#endif

#endif // LATENTBIAS_WINDOWSEXPORT_H_
